"""Direct launches (`runtime/direct.py`): the signature a compiled kernel is kept under separates
every launch Triton would specialize differently, and a kept kernel's launcher gets the arguments
in the order Triton's own launch passes them. (The GPU tests run them against Triton's dispatch.)"""
from __future__ import annotations

import pytest
import torch
import triton.language as tl
from triton.runtime.jit import JITFunction

from attnforge.runtime import direct


def _kernel(X, n, scale, BLOCK: tl.constexpr, FLAG: tl.constexpr = True):
    pass


def _sig(args, consts=None, options=None, device=0):
    return direct.signature("fwd", device, args, consts or {"BLOCK": 16}, options or {"num_warps": 4})


def test_signature_separates_what_triton_specializes():
    x = torch.empty(64, dtype=torch.float32)
    base = _sig([x, 32, 0.5])
    assert base == _sig([torch.empty(64, dtype=torch.float32), 32, 0.5])  # another aligned tensor
    differs = [
        _sig([x[1:], 32, 0.5]),                               # a base 4 bytes past 16-byte alignment
        _sig([x.to(torch.float16), 32, 0.5]),                 # dtype
        _sig([x, 1, 0.5]),                                    # an int equal to 1 (a constexpr to Triton)
        _sig([x, 33, 0.5]),                                   # not a multiple of 16
        _sig([x, 48, 0.5]),                                   # another value of the same class
        _sig([x, 32, 0.25]),                                  # a float's value
        _sig([x, 32, 0.5], consts={"BLOCK": 32}),             # a constexpr
        _sig([x, 32, 0.5], options={"num_warps": 8}),         # a launch option
        _sig([x, 32, 0.5], device=1),                         # the current device
    ]
    assert all(d != base for d in differs)
    assert len(set(differs)) == len(differs)


def test_signature_declines_arguments_it_cannot_describe():
    class Descriptor:
        pass

    assert _sig([Descriptor(), 32, 0.5]) is None
    desc = Descriptor()
    setattr(desc, direct.SIG_ATTR, ("bf16", (1, 1, 64, 128)))
    assert _sig([desc, 32, 0.5]) == _sig([desc, 32, 0.5]) is not None


class _Kernel:
    """A stand-in for a CompiledKernel: its launcher records what it is given."""

    function, packed_metadata = "function", "packed"

    def __init__(self):
        self.launches = []

    def run(self, *args):
        self.launches.append(args)


def test_kept_kernel_gets_triton_s_argument_order(monkeypatch):
    monkeypatch.setattr(direct, "_STREAM", [lambda device: f"stream{device}"])
    jit = JITFunction(_kernel)
    kernel, table = _Kernel(), {}
    x = torch.empty(8)
    key = _sig([x, 7, 0.5], device=3)
    assert not direct.launch(table, key, 3, (4, 2), [x, 7, 0.5])  # nothing kept yet
    direct.remember(table, key, kernel, jit, [x, 7, 0.5], {"BLOCK": 16})
    assert direct.launch(table, key, 3, (4, 2), [x, 7, 0.5])
    # grid padded to three, the stream of the current device, no launch metadata or hooks, then the
    # positional arguments and every constexpr after them (FLAG's default included)
    assert kernel.launches == [(4, 2, 1, "stream3", "function", "packed", None, None, None, x, 7, 0.5, 16, True)]


def test_no_kernel_is_kept_where_a_later_parameter_is_not_constexpr():
    def partial(X, n, scale, BLOCK: tl.constexpr):
        pass

    table = {}
    x = torch.empty(8)
    direct.remember(table, _sig([x, 7]), _Kernel(), JITFunction(partial), [x, 7], {"scale": 0.5, "BLOCK": 16})
    assert table == {}


def test_launch_hooks_send_launches_through_triton(monkeypatch):
    import triton

    monkeypatch.setattr(direct, "_STREAM", [lambda device: None])
    table = {}
    key = _sig([7])
    direct.remember(table, key, _Kernel(), JITFunction(_kernel), [torch.empty(8), 7, 0.5], {"BLOCK": 16})
    assert direct.launch(table, key, 0, (1,), [torch.empty(8), 7, 0.5])
    hooks = triton.knobs.runtime.launch_enter_hook
    if hasattr(hooks, "add"):  # Triton 3.9: a chain of hooks, empty unless one is added
        hooks.add(_hook)
        try:
            assert not direct.launch(table, key, 0, (1,), [torch.empty(8), 7, 0.5])
        finally:
            hooks.remove(_hook)
    monkeypatch.setattr(triton.knobs.runtime, "launch_enter_hook", _hook)  # Triton 3.6: a function
    assert not direct.launch(table, key, 0, (1,), [torch.empty(8), 7, 0.5])


def _hook(*args):
    pass


def test_a_launcher_that_takes_other_arguments_turns_direct_launches_off(monkeypatch):
    """A Triton whose launcher parses its arguments otherwise raises TypeError before anything runs:
    the launch goes through Triton (False) and so do all later ones."""
    class Other(_Kernel):
        def run(self, *args):
            raise TypeError("function takes exactly 12 arguments")

    monkeypatch.setattr(direct, "_STREAM", [lambda device: None])
    monkeypatch.setattr(direct, "ENABLED", True)
    table, x = {}, torch.empty(8)
    key = _sig([x, 7, 0.5])
    direct.remember(table, key, Other(), JITFunction(_kernel), [x, 7, 0.5], {"BLOCK": 16})
    with pytest.warns(RuntimeWarning, match="through Triton"):
        assert not direct.launch(table, key, 0, (1,), [x, 7, 0.5])
    assert not direct.ENABLED and table == {}
