"""Input checks for every public entry point, generated from tables rather than copy-pasted."""
from __future__ import annotations

import functools

import torch

from ..ir.expr import BOOL, FLOAT, INT
from ..ir.program import Program

# (argument, what is expected, predicate over (q, k, v, enable_gqa), what was got)
QKV_CHECKS = [
    ("q", "a 4-D tensor [B, Hq, Lq, D]", lambda q, k, v, g: q.dim() == 4, lambda q, k, v: q.shape),
    ("k", "a 4-D tensor [B, Hkv, Lk, D]", lambda q, k, v, g: k.dim() == 4, lambda q, k, v: k.shape),
    ("v", "a 4-D tensor [B, Hkv, Lk, Dv]", lambda q, k, v, g: v.dim() == 4, lambda q, k, v: v.shape),
    ("q", "a floating dtype (float16, bfloat16, float32, float64)",
     lambda q, k, v, g: q.dtype.is_floating_point, lambda q, k, v: q.dtype),
    ("k", "the same dtype as q", lambda q, k, v, g: k.dtype == q.dtype, lambda q, k, v: k.dtype),
    ("v", "the same dtype as q", lambda q, k, v, g: v.dtype == q.dtype, lambda q, k, v: v.dtype),
    ("k", "the same device as q", lambda q, k, v, g: k.device == q.device, lambda q, k, v: k.device),
    ("v", "the same device as q", lambda q, k, v, g: v.device == q.device, lambda q, k, v: v.device),
    ("k", "batch size B equal to q's", lambda q, k, v, g: k.shape[0] == q.shape[0],
     lambda q, k, v: k.shape[0]),
    ("k", "head dim D equal to q's", lambda q, k, v, g: k.shape[3] == q.shape[3],
     lambda q, k, v: k.shape[3]),
    ("v", "shape [B, Hkv, Lk, Dv] matching k in B, Hkv and Lk",
     lambda q, k, v, g: v.shape[:3] == k.shape[:3], lambda q, k, v: tuple(v.shape)),
    ("q", "Hq a multiple of k's Hkv", lambda q, k, v, g: q.shape[1] % k.shape[1] == 0,
     lambda q, k, v: f"Hq={q.shape[1]}, Hkv={k.shape[1]}"),
    ("enable_gqa", "True when Hq != Hkv", lambda q, k, v, g: g or q.shape[1] == k.shape[1],
     lambda q, k, v: f"False with Hq={q.shape[1]}, Hkv={k.shape[1]}"),
    ("q", "at least one query, key and head dimension",
     lambda q, k, v, g: min(q.shape[2], k.shape[2], q.shape[3], q.shape[0], q.shape[1]) > 0,
     lambda q, k, v: f"q {tuple(q.shape)}, k {tuple(k.shape)}"),
]

KIND = {BOOL: "a bool", INT: "an integer", FLOAT: "a floating"}


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return BOOL
    return FLOAT if t.dtype.is_floating_point else INT


def check_qkv(q, k, v, enable_gqa: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    for arg, expected, ok, got in QKV_CHECKS:
        if not ok(q, k, v, enable_gqa):
            raise ValueError(f"{arg}: expected {expected}, got {got(q, k, v)}")


@functools.cache
def _shape_text(shape: tuple) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def check_tensors(prog: Program, q, k, tensors: dict) -> None:
    """Every captured tensor present, of the declared kind, shape and device."""
    names = {p.name for p in prog.params}
    extra = sorted(set(tensors) - names)
    if extra:
        raise ValueError(f"{', '.join(extra)}: unknown tensor argument(s); the variant reads "
                         f"{', '.join(sorted(names)) or 'no tensors'}")
    if not prog.params:
        return
    dims = {"B": q.shape[0], "H": q.shape[1], "Hq": q.shape[1], "Hkv": k.shape[1],
            "Lq": q.shape[2], "L": q.shape[2], "Lk": k.shape[2], "D": q.shape[3]}
    for p in prog.params:
        shape = _shape_text(p.shape)
        if p.name not in tensors:
            raise ValueError(f"{p.name}: missing captured tensor; expected {KIND[p.scalar]} "
                             f"tensor of shape {shape}")
        t = tensors[p.name]
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{p.name}: expected a torch.Tensor, got {type(t).__name__}")
        if _kind(t) != p.scalar:
            raise ValueError(f"{p.name}: expected {KIND[p.scalar]} tensor ({p.dtype}), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{p.name}: expected device {q.device} (q's), got {t.device}")
        if t.dim() != len(p.shape):
            raise ValueError(f"{p.name}: expected shape {shape}, got {tuple(t.shape)}")
        for d, (want, n) in enumerate(zip(p.shape, t.shape)):
            if isinstance(want, str):
                want = dims.setdefault(want, n)
            if want != n:
                raise ValueError(f"{p.name}: expected shape {shape} (dimension {d} = {want}), "
                                 f"got {tuple(t.shape)}")
        if t.numel() == 0:  # the kernels clamp indices into the tensor: it needs an element
            raise ValueError(f"{p.name}: expected a non-empty tensor of shape {shape}, got {tuple(t.shape)}")


def check_inputs(prog: Program, q, k, v, tensors: dict, *, enable_gqa: bool, passed: set | None = None) -> None:
    """`passed`: signatures of inputs that passed for `prog` (what the checks read of them: types,
    shapes, dtypes and devices), which are not checked again."""
    key = None
    if passed is not None:
        try:
            key = (enable_gqa, *(_signature(t) for t in (q, k, v)),
                   *((n, _signature(t)) for n, t in tensors.items()))
            if key in passed:
                return
        except (AttributeError, TypeError):  # (not a tensor, or an unhashable stand-in: the checks say so)
            key = None
    check_qkv(q, k, v, enable_gqa)
    check_tensors(prog, q, k, tensors)
    if key is not None:
        if len(passed) >= 1024:
            passed.clear()
        passed.add(key)


def _signature(t) -> tuple:
    return type(t), t.shape, t.dtype, t.device
