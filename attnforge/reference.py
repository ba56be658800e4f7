"""Dense eager evaluation of the IR with torch autograd: the test oracle. Runs in float64.

`evaluate` computes any expression over broadcast index tensors; `run_program` is attention over the
full Lq x Lk score matrix; `attention` has `attnforge.attention`'s signature.
"""
from __future__ import annotations

import math

import torch

from .ir.expr import (BOOL, FLOAT, INT, Binary, Call, Cast, Const, Expr, Load, RangeReduce, Unary,
                      Var, Where)
from .ir.program import Program

_BIN = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "truediv": torch.true_divide,
    "floordiv": lambda a, b: torch.div(a, b, rounding_mode="floor"), "mod": torch.remainder,
    "pow": torch.pow, "min": torch.minimum, "max": torch.maximum, "lt": torch.lt, "le": torch.le,
    "gt": torch.gt, "ge": torch.ge, "eq": torch.eq, "ne": torch.ne,
    "and": lambda a, b: a & b, "or": lambda a, b: a | b, "xor": lambda a, b: a ^ b,
    "lshift": torch.bitwise_left_shift, "rshift": torch.bitwise_right_shift,
}
_FN = {
    "exp": torch.exp, "exp2": torch.exp2, "log": torch.log, "log2": torch.log2, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "sin": torch.sin,
    "cos": torch.cos, "abs": torch.abs, "sign": torch.sign, "floor": torch.floor, "ceil": torch.ceil,
}


class Evaluator:
    """Evaluates expressions with `env` (name -> tensor) and captured `tensors`, floats in `fdtype`."""

    def __init__(self, env: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor],
                 fdtype: torch.dtype = torch.float64, device=None):
        self.env, self.tensors, self.fdtype = env, tensors, fdtype
        self.device = device or next(iter(env.values())).device
        self.memo: dict[int, torch.Tensor] = {}
        self._tables: dict = {}

    def torch_dtype(self, dtype: str) -> torch.dtype:
        return {BOOL: torch.bool, INT: torch.int64, FLOAT: self.fdtype}[dtype]

    def __call__(self, e: Expr) -> torch.Tensor:
        key = id(e)
        if key not in self.memo:
            self.memo[key] = self._eval(e)
        return self.memo[key]

    def _eval(self, e: Expr) -> torch.Tensor:
        td = self.torch_dtype(e.dtype) if e.dtype in (BOOL, INT, FLOAT) else None
        match e:
            case Const(value=v):
                # a fill kernel: torch.tensor(v, device=cuda) would copy from host memory, which
                # waits for the GPU (a sync in every backward that evaluates an index)
                return torch.full((), v, dtype=td, device=self.device)
            case Var(name=n):
                return self.env[n].to(td)
            case Load(param=p, index=idx):
                return self._load(p, idx).to(td)
            case Unary(op="neg", x=x):
                return -(self(x).to(td))
            case Unary(op="not", x=x):
                return ~self(x)
            case Call(fn=fn, x=x):
                return _FN[fn](self(x).to(td))
            case Cast(x=x):
                return self(x).to(td)
            case Where(cond=c, a=a, b=b):
                return torch.where(self(c), self(a).to(td), self(b).to(td))
            case Binary(op=op, a=a, b=b):
                wide = self.torch_dtype(e.dtype if op not in ("lt", "le", "gt", "ge", "eq", "ne")
                                        else _operand_type(a, b))
                if op in ("and", "or", "xor") and e.dtype == BOOL:
                    wide = torch.bool
                return _BIN[op](self(a).to(wide), self(b).to(wide))
            case RangeReduce():
                return self._range(e).to(td)
        raise TypeError(f"cannot evaluate {e!r}")

    def _load(self, name: str, index) -> torch.Tensor:
        t = self.tensors[name]
        idx = [self(i).to(torch.int64) for i in index]
        for d, (i, n) in enumerate(zip(idx, t.shape)):
            if i.numel() and (int(i.min()) < 0 or int(i.max()) >= n):
                raise ValueError(f"captured tensor `{name}` is indexed out of range in dimension "
                                 f"{d}: indices span [{int(i.min())}, {int(i.max())}], expected "
                                 f"[0, {n - 1}]")
        return t[tuple(idx)] if idx else t

    def _range(self, e: RangeReduce) -> torch.Tensor:
        """min/max of a captured tensor over a box of indices (per tile; conservative)."""
        t = self.tensors[e.param]
        t = t.to(torch.int64) if t.dtype == torch.bool else t
        lo = [self(x).to(torch.int64) for x in e.lo]
        hi = [self(x).to(torch.int64) for x in e.hi]
        ranged = []
        for d, (a, b) in enumerate(zip(lo, hi)):
            n = t.shape[d]
            a, b = a.clamp(0, n - 1), b.clamp(0, n - 1)
            lo[d], hi[d] = a, torch.maximum(a, b)
            if not (e.lo[d] == e.hi[d]):
                ranged.append(d)
        reduce = torch.amin if e.op == "min" else torch.amax
        if len(ranged) != 1:
            # several ranged dims: bound by the whole tensor (conservative)
            return reduce(t).expand(torch.broadcast_shapes(*(x.shape for x in lo + hi)))
        d = ranged[0]
        flat = t.movedim(d, -1)
        points = [lo[k] for k in range(t.dim()) if k != d]
        table = self._sparse_table((e.param, e.op, d), e.op, flat)
        a, b = lo[d], hi[d]
        k = torch.floor(torch.log2((b - a + 1).double())).to(torch.int64)
        first = _gather_levels(table, k, points, a)
        second = _gather_levels(table, k, points, b - (1 << k) + 1)
        return torch.minimum(first, second) if e.op == "min" else torch.maximum(first, second)

    def _sparse_table(self, key, op, flat: torch.Tensor) -> torch.Tensor:
        """Sparse table: level j holds min/max over [i, i + 2^j); O(n log n) to build."""
        if key not in self._tables:
            n = flat.shape[-1]
            levels = [flat]
            j = 1
            while (1 << j) <= n:
                prev = levels[-1]
                half = 1 << (j - 1)
                nxt = prev.clone()
                pair = prev[..., half:]
                m = torch.minimum if op == "min" else torch.maximum
                nxt[..., : n - half] = m(prev[..., : n - half], pair)
                levels.append(nxt)
                j += 1
            self._tables[key] = torch.stack(levels)  # [log n, ..., n]
        return self._tables[key]


def _gather_levels(table: torch.Tensor, k, points, pos) -> torch.Tensor:
    return table[(k, *points, pos)]


def _operand_type(a: Expr, b: Expr) -> str:
    if FLOAT in (a.dtype, b.dtype):
        return FLOAT
    return BOOL if a.dtype == b.dtype == BOOL else INT


def index_env(B: int, H: int, Lq: int, Lk: int, device) -> dict[str, torch.Tensor]:
    ar = lambda n: torch.arange(n, device=device)  # noqa: E731
    return {"b": ar(B).view(B, 1, 1, 1), "h": ar(H).view(1, H, 1, 1),
            "q_idx": ar(Lq).view(1, 1, Lq, 1), "kv_idx": ar(Lk).view(1, 1, 1, Lk)}


def dense_mask(mask: Expr | None, B: int, H: int, Lq: int, Lk: int, tensors, device="cpu",
               consts=None) -> torch.Tensor:
    env = {**index_env(B, H, Lq, Lk, device), **(consts or {})}
    if mask is None:
        return torch.ones(B, H, Lq, Lk, dtype=torch.bool, device=device)
    return Evaluator(env, tensors, device=device)(mask).expand(B, H, Lq, Lk)


def run_program(prog: Program, q, k, v, tensors=None, *, scale=None, enable_gqa=False,
                return_lse=False):
    """Dense attention for a FlexAttention-shaped program. Floats computed in q's dtype."""
    flex = prog.as_flex()
    if flex is None:
        raise NotImplementedError(f"variant `{prog.name}` uses branches/selection/combiner kinds "
                                  "that the reference does not evaluate yet (softmax + static "
                                  "mask only)")
    score_expr, mask_expr = flex
    tensors = tensors or {}
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    if Hq != Hkv:
        k = k.repeat_interleave(Hq // Hkv, dim=1)
        v = v.repeat_interleave(Hq // Hkv, dim=1)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    fdtype = q.dtype
    s = (q @ k.transpose(-1, -2)) * scale
    consts = {c.name: torch.tensor(c.value) for c in prog.consts}
    env = {**index_env(B, Hq, Lq, Lk, q.device), **consts, "score": s}
    ev = Evaluator(env, tensors, fdtype, q.device)
    z = ev(score_expr).to(fdtype).expand(B, Hq, Lq, Lk)
    if mask_expr is not None:
        keep = ev(mask_expr).expand(B, Hq, Lq, Lk)
        z = torch.where(keep, z, torch.full((), -math.inf, dtype=fdtype, device=q.device))
    m = z.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
    p = torch.exp(z - m)
    denom = p.sum(dim=-1, keepdim=True)
    live = denom > 0
    safe = torch.where(live, denom, torch.ones_like(denom))
    out = (p @ v.to(fdtype)) / safe
    if not return_lse:
        return out
    lse = torch.where(live, torch.log(safe) + m, torch.full_like(m, -math.inf)).squeeze(-1)
    return out, lse.to(torch.float32 if fdtype in (torch.float16, torch.bfloat16) else fdtype)


def attention(q, k, v, score_mod=None, mask_mod=None, *, scale=None, enable_gqa=False,
              return_lse=False):
    """`attnforge.attention` evaluated densely. Traces the mods (the front end) once per call."""
    from .dsl.trace import trace  # the one front-end dependency: mods must become IR first
    from .runtime.validate import check_inputs

    prog, tensors = trace(score_mod, mask_mod)
    check_inputs(prog, q, k, v, tensors, enable_gqa=enable_gqa)
    return run_program(prog, q, k, v, tensors, scale=scale, enable_gqa=enable_gqa,
                       return_lse=return_lse)
