"""Launching a kernel again without Triton's per-call dispatch.

Triton's `JITFunction.run` specializes every argument on every launch (dtype and 16-byte alignment of
a tensor, the value class of an int), hashes the result, looks the compiled kernel up and only then
calls its launcher. A forward passes ~25 arguments and the one-launch backward ~70: on the lent
machines' CPUs that dispatch took longer than a short kernel (a document-masked forward at L=2048
runs in ~0.2 ms), so short calls timed the host.

Here the first launch of a call signature goes through Triton (which compiles, checks resources and
loads the binary) and returns its `CompiledKernel`; later launches with the same signature call that
kernel's launcher directly (`CompiledKernel.run` with its `function` and `packed_metadata`, the call
`CompiledKernel.__getitem__(grid)` makes, the same in Triton 3.6 through 3.9). The signature is finer
than Triton's specialization, so it never picks a kernel Triton would not have: every int and float by
value (each argument position holds one type, so 1 and True never meet), every tensor by dtype and
whether its address is 16-byte aligned, descriptors by the key `launch._descriptor` made them under,
the constexprs and launch options, the current device. Where a launch hook is set (a profiler such as
proton) or an argument is of another kind, launches go through Triton as before.
ATTNFORGE_DIRECT_LAUNCH=0 turns this off.
"""
from __future__ import annotations

import inspect
import os
import warnings

import torch
import triton

ENABLED = os.environ.get("ATTNFORGE_DIRECT_LAUNCH", "1") != "0"
SIG_ATTR = "_attnforge_sig"  # set on the host-side descriptors `launch._descriptor` makes
MAX_KEPT = 512  # signatures kept per variant
_PLAIN = frozenset((int, float, bool, type(None)))


class Unknown(Exception):
    """An argument the signature cannot describe: launch through Triton."""


def _arg(a):
    if isinstance(a, torch.Tensor):
        return a.dtype, a.data_ptr() % 16 == 0
    sig = getattr(a, SIG_ATTR, None)
    if sig is None:
        raise Unknown(type(a).__name__)
    return sig


def signature(kind: str, device: int, args: list, constexprs: dict, options: dict) -> tuple | None:
    """The key of a launch on the current `device` (None: one this module does not take)."""
    try:
        spec = tuple([a if type(a) in _PLAIN else (a.dtype, a.data_ptr() % 16 == 0) if type(a) is torch.Tensor
                      else _arg(a) for a in args])  # (a list, then a tuple: this runs on every launch)
    except Unknown:
        return None
    return (kind, device, spec, tuple(constexprs.items()), tuple(options.items()))


class Direct:
    """One compiled kernel's launcher, and the values of the parameters after the positional
    arguments (constexprs: the launcher skips them, as it skips them in Triton's own launch)."""

    __slots__ = ("run", "function", "packed", "tail")

    def __init__(self, kernel, tail: list):
        self.run = kernel.run  # (loads the binary where the first launch has not)
        self.function, self.packed, self.tail = kernel.function, kernel.packed_metadata, tail


_STREAM = []  # Triton's device -> stream function, looked up once


def _set(hook) -> bool:
    """A launch hook is set: a function (Triton 3.6), a chain holding one (3.9's HookChain)."""
    return hook is not None and bool(getattr(hook, "calls", True))


def _hooked() -> bool:
    rt = triton.knobs.runtime
    return _set(rt.launch_enter_hook) or _set(rt.launch_exit_hook)


def launch(table: dict, key: tuple, device: int, grid: tuple, args: list) -> bool:
    """Launch the kernel kept under `key` directly on the current `device` (the one `key` names);
    False where none is kept (or a hook is set)."""
    entry = table.get(key)
    if entry is None or _hooked():
        return False
    if not _STREAM:
        from triton.runtime import driver
        _STREAM.append(driver.active.get_current_stream)
    n = len(grid)
    try:
        entry.run(grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1, _STREAM[0](device),
                  entry.function, entry.packed, None, None, None, *args, *entry.tail)
    except TypeError as err:  # a launcher that takes its arguments otherwise (a later Triton): raised
        _give_up(err)         # while parsing them, before anything runs; Triton's dispatch from now on
        table.clear()
        return False
    return True


def _give_up(err: Exception) -> None:
    global ENABLED
    ENABLED = False
    warnings.warn(f"attnforge: launching kernels directly failed ({err}); launching through Triton from now "
                  "on", RuntimeWarning, stacklevel=3)


def remember(table: dict, key: tuple | None, kernel, jit_fn, args: list, constexprs: dict) -> None:
    """Keep `kernel` (what Triton's launch of `jit_fn` with `args` and `constexprs` returned) under
    `key`, where every parameter after the positional arguments is a constexpr."""
    if key is None or kernel is None or not hasattr(kernel, "packed_metadata") or _hooked():
        return
    params = getattr(jit_fn, "params", None)
    if params is None or not all(p.is_constexpr for p in params[len(args):]):
        return
    bound = inspect.signature(jit_fn.fn).bind(*args, **constexprs)
    bound.apply_defaults()
    if len(table) >= MAX_KEPT:  # (sizes that keep changing: start again rather than grow)
        table.clear()
    table[key] = Direct(kernel, list(bound.arguments.values())[len(args):])
