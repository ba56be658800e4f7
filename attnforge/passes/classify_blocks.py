"""classify_blocks: tile predicates derived from each static mask by interval reasoning.

Before: a simplified Program. After: `prog.block_rules` holds, per StaticSelect, two bool expressions
over b, h and a tile's inclusive index bounds q_lo..q_hi, kv_lo..kv_hi:
`may_true` (false => every pair in the tile is masked out: the tile is empty) and `may_false`
(false => every pair is allowed: the tile is full). Both are conservative: where the analysis cannot
decide, they are true and the tile is partial. Index expressions are bounded exactly when affine in
q_idx and kv_idx, by interval arithmetic otherwise; captured tensors read at a range of indices are
bounded by `RangeReduce` (their min/max over the range), which the runtime answers per tile.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.expr import (BOOL, FLOAT, INT, Binary, Call, Cast, Const, Expr, Load, RangeReduce, Unary,
                       Var, Where, binary, call, cast, const, unary, where)
from ..ir.program import BlockRule, Program, StaticSelect
from .simplify import apply_rules

BOUNDS = {"b": ("b", "b"), "h": ("h", "h"), "q_idx": ("q_lo", "q_hi"), "kv_idx": ("kv_lo", "kv_hi")}
MONOTONE = ("exp", "exp2", "tanh", "sigmoid", "floor", "ceil", "sign")
TRUE, FALSE = Const(True, BOOL), Const(False, BOOL)

Bound = Expr | None  # None: unbounded on that side


def _v(name: str) -> Var:
    return Var(name, INT)


def _add(a: Bound, b: Bound) -> Bound:
    return None if a is None or b is None else binary("add", a, b)


def _neg(a: Bound) -> Bound:
    return None if a is None else unary("neg", a)


def _lift(op: str, a: Bound, b: Bound) -> Bound:
    return None if a is None or b is None else binary(op, a, b)


def _not(x: Expr) -> Expr:
    return unary("not", x)


def _and(a: Expr, b: Expr) -> Expr:
    return binary("and", a, b)


def _or(a: Expr, b: Expr) -> Expr:
    return binary("or", a, b)


def affine(e: Expr) -> dict[str, int] | None:
    """`e` as {index var: coefficient, "": constant} when it is affine with int coefficients."""
    match e:
        case Const(value=v) if e.dtype == INT:
            return {"": v}
        case Var(name=n) if n in BOUNDS:
            return {n: 1}
        case Unary(op="neg", x=x) if e.dtype == INT:
            a = affine(x)
            return None if a is None else {k: -c for k, c in a.items()}
        case Binary(op="add" | "sub", a=a, b=b) if e.dtype == INT:
            fa, fb = affine(a), affine(b)
            if fa is None or fb is None:
                return None
            sign = 1 if e.op == "add" else -1
            out = dict(fa)
            for k, c in fb.items():
                out[k] = out.get(k, 0) + sign * c
            return out
        case Binary(op="mul", a=a, b=Const(value=k, dtype="int")) | \
                Binary(op="mul", a=Const(value=k, dtype="int"), b=a) if e.dtype == INT:
            fa = affine(a)
            return None if fa is None else {v: c * k for v, c in fa.items()}
    return None


def _affine_bounds(form: dict[str, int]) -> tuple[Expr, Expr]:
    """Exact bounds of sum(c * var) + c0 over the tile: each var at the end its sign picks."""
    lo: Expr | None = None
    hi: Expr | None = None
    for var, c in form.items():
        if var == "" or c == 0:
            continue
        v_lo, v_hi = (_v(n) for n in BOUNDS[var])
        lo = _axpy(lo, c, v_lo if c > 0 else v_hi)
        hi = _axpy(hi, c, v_hi if c > 0 else v_lo)
    c0 = form.get("", 0)
    return _axpy(lo, c0, None), _axpy(hi, c0, None)


def _axpy(acc: Expr | None, c: int, v: Expr | None) -> Expr:
    """acc + c * v written with `-` for negative c (v None: the constant c)."""
    term = const(abs(c)) if v is None else v if abs(c) == 1 else binary("mul", const(abs(c)), v)
    if acc is None:
        return term if c >= 0 or v is None and c == 0 else unary("neg", term) if v is not None \
            else const(c)
    if c == 0:
        return acc
    return binary("add" if c > 0 else "sub", acc, term)


def ival(e: Expr) -> tuple[Bound, Bound]:
    """Bounds (lo, hi) of a number-valued expression over the tile."""
    form = affine(e) if e.dtype == INT else None
    if form is not None:
        return _affine_bounds(form)
    match e:
        case Const():
            return e, e
        case Var(name=n) if n in BOUNDS:
            lo, hi = BOUNDS[n]
            return _v(lo), _v(hi)
        case Cast(x=x) if x.dtype == BOOL:
            t, f = bval(x)
            return cast(_not(f), e.dtype), cast(t, e.dtype)
        case Cast(x=x):
            lo, hi = ival(x)
            return (None if lo is None else cast(lo, e.dtype)), (None if hi is None else cast(hi, e.dtype))
        case Load():
            return _load_bounds(e)
        case Unary(op="neg", x=x):
            lo, hi = ival(x)
            return _neg(hi), _neg(lo)
        case Unary(op="not", x=x):  # bitwise ~x == -x - 1
            lo, hi = ival(x)
            one = const(1)
            return _lift("sub", _neg(hi), one), _lift("sub", _neg(lo), one)
        case Call(fn=fn, x=x) if fn in MONOTONE:
            lo, hi = ival(x)
            return (None if lo is None else call(fn, lo)), (None if hi is None else call(fn, hi))
        case Call(fn="abs", x=x):
            lo, hi = ival(x)
            if lo is None or hi is None:
                return const(0 if e.dtype == INT else 0.0), None
            zero = const(0 if e.dtype == INT else 0.0)
            low = where(binary("ge", lo, zero), lo, where(binary("le", hi, zero), unary("neg", hi), zero))
            return low, binary("max", unary("neg", lo), hi)
        case Where(cond=c, a=a, b=b):
            t, f = bval(c)
            (alo, ahi), (blo, bhi) = ival(a), ival(b)
            return _select(t, f, alo, blo, "min"), _select(t, f, ahi, bhi, "max")
        case Binary(op=op, a=a, b=b):
            return _binary_bounds(op, e, ival(a), ival(b))
    return None, None


def _select(t: Expr, f: Expr, a: Bound, b: Bound, op: str) -> Bound:
    if a is None or b is None:
        return None
    return where(_not(f), a, where(_not(t), b, binary(op, a, b)))


def _binary_bounds(op: str, e: Binary, a, b) -> tuple[Bound, Bound]:
    (alo, ahi), (blo, bhi) = a, b
    kb = e.b.value if isinstance(e.b, Const) else None
    ka = e.a.value if isinstance(e.a, Const) else None
    match op:
        case "add":
            return _add(alo, blo), _add(ahi, bhi)
        case "sub":
            return _lift("sub", alo, bhi), _lift("sub", ahi, blo)
        case "min":  # a missing bound is +-inf: min(x, +inf) == x
            return _lift("min", alo, blo), (ahi if bhi is None else bhi if ahi is None
                                            else binary("min", ahi, bhi))
        case "max":
            return (alo if blo is None else blo if alo is None else binary("max", alo, blo)), \
                _lift("max", ahi, bhi)
        case "mul" if kb is not None or ka is not None:
            k, (lo, hi) = (kb, (alo, ahi)) if kb is not None else (ka, (blo, bhi))
            lo2, hi2 = _lift("mul", lo, const(k)), _lift("mul", hi, const(k))
            return (lo2, hi2) if k >= 0 else (hi2, lo2)
        case "mul" if None not in (alo, ahi, blo, bhi):
            ps = [binary("mul", x, y) for x in (alo, ahi) for y in (blo, bhi)]
            lo, hi = ps[0], ps[0]
            for p in ps[1:]:
                lo, hi = binary("min", lo, p), binary("max", hi, p)
            return lo, hi
        case "floordiv" | "truediv" | "rshift" if kb is not None and kb > 0 or op == "rshift" and kb == 0:
            return _lift(op, alo, e.b), _lift(op, ahi, e.b)
        case "floordiv" | "truediv" if kb is not None and kb < 0:
            return _lift(op, ahi, e.b), _lift(op, alo, e.b)
        case "lshift" if kb is not None and kb >= 0:
            return _lift(op, alo, e.b), _lift(op, ahi, e.b)
        case "mod" if kb is not None and kb > 0 and e.dtype == INT:
            top = const(kb - 1)
            if alo is None or ahi is None:
                return const(0), top
            same = binary("eq", binary("floordiv", alo, e.b), binary("floordiv", ahi, e.b))
            return where(same, binary("mod", alo, e.b), const(0)), where(same, binary("mod", ahi, e.b), top)
        case "and" if e.dtype == INT and kb is not None and kb >= 0:
            return const(0), const(kb)
        case "and" if e.dtype == INT and ka is not None and ka >= 0:
            return const(0), const(ka)
    return None, None


def _load_bounds(e: Load) -> tuple[Bound, Bound]:
    bounds = [ival(i) for i in e.index]
    if all(lo is not None and lo == hi for lo, hi in bounds):
        exact = Load(e.param, tuple(lo for lo, _ in bounds), e.dtype)
        return exact, exact
    los = tuple(lo if lo is not None else const(-(2 ** 62)) for lo, _ in bounds)
    his = tuple(hi if hi is not None else const(2 ** 62) for _, hi in bounds)
    return RangeReduce("min", e.param, los, his, e.dtype), RangeReduce("max", e.param, los, his, e.dtype)


_CMP = {  # (may_true, may_false) of `d op 0` from d's bounds
    "lt": lambda lo, hi: (binary("lt", lo, _z(lo)) if lo is not None else TRUE,
                          binary("ge", hi, _z(hi)) if hi is not None else TRUE),
    "le": lambda lo, hi: (binary("le", lo, _z(lo)) if lo is not None else TRUE,
                          binary("gt", hi, _z(hi)) if hi is not None else TRUE),
    "gt": lambda lo, hi: (binary("gt", hi, _z(hi)) if hi is not None else TRUE,
                          binary("le", lo, _z(lo)) if lo is not None else TRUE),
    "ge": lambda lo, hi: (binary("ge", hi, _z(hi)) if hi is not None else TRUE,
                          binary("lt", lo, _z(lo)) if lo is not None else TRUE),
}


def _z(x: Expr) -> Const:
    return const(0.0) if x.dtype == FLOAT else const(0)


def _compare(op: str, a: Expr, b: Expr) -> tuple[Expr, Expr]:
    if a.dtype == BOOL and b.dtype == BOOL and op in ("eq", "ne"):
        (at, af), (bt, bf) = bval(a), bval(b)
        same = (_or(_and(at, bt), _and(af, bf)), _or(_and(at, bf), _and(af, bt)))
        return same if op == "eq" else same[::-1]
    diff = binary("sub", cast(a, INT) if a.dtype == BOOL else a, cast(b, INT) if b.dtype == BOOL else b)
    lo, hi = ival(diff)
    if op in _CMP:
        return _CMP[op](lo, hi)
    if lo is None or hi is None:
        return TRUE, TRUE
    zero = _z(lo)
    eq_t = _and(binary("le", lo, zero), binary("ge", hi, zero))
    eq_f = _or(binary("ne", lo, zero), binary("ne", hi, zero))
    return (eq_t, eq_f) if op == "eq" else (eq_f, eq_t)


def bval(e: Expr) -> tuple[Expr, Expr]:
    """(may_true, may_false) of a bool expression over the tile."""
    match e:
        case Const(value=v):
            return (TRUE, FALSE) if v else (FALSE, TRUE)
        case Binary(op=op, a=a, b=b) if op in ("lt", "le", "gt", "ge", "eq", "ne"):
            return _compare(op, a, b)
        case Binary(op="and", a=a, b=b):
            (at, af), (bt, bf) = bval(a), bval(b)
            return _and(at, bt), _or(af, bf)
        case Binary(op="or", a=a, b=b):
            (at, af), (bt, bf) = bval(a), bval(b)
            return _or(at, bt), _and(af, bf)
        case Binary(op="xor", a=a, b=b):
            return _compare("ne", a, b)
        case Unary(op="not", x=x):
            t, f = bval(x)
            return f, t
        case Where(cond=c, a=a, b=b):
            (ct, cf), (at, af), (bt, bf) = bval(c), bval(a), bval(b)
            return _or(_and(ct, at), _and(cf, bt)), _or(_and(ct, af), _and(cf, bf))
        case Cast(x=x):
            return _compare("ne", x, _z(x) if x.dtype != BOOL else FALSE)
        case Load():
            lo, hi = _load_bounds(e)
            return cast(hi, BOOL), _not(cast(lo, BOOL))
    return TRUE, TRUE


def block_rule(name: str, mask: Expr) -> BlockRule:
    t, f = bval(mask)
    return BlockRule(name, apply_rules(t), apply_rules(f))


def classify_blocks(prog: Program) -> Program:
    rules = tuple(block_rule(s.name, s.mask) for s in prog.selections if isinstance(s, StaticSelect))
    return replace(prog, block_rules=rules)
