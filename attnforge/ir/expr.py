"""Pointwise expressions: the closed union `Expr` and the typed builders every front end uses.

Scalar types are "bool", "int" and "float". `&`, `|`, `^`, `~` are logical on bool and bitwise on int;
`//` and `%` floor toward -inf (Python/torch semantics), `/` is true division and always gives float.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import DSLError, Span

BOOL, INT, FLOAT = "bool", "int", "float"
SCALAR_TYPES = (BOOL, INT, FLOAT)

ARITH_OPS = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "min", "max")
CMP_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
LOGIC_OPS = ("and", "or", "xor")
SHIFT_OPS = ("lshift", "rshift")
BINARY_OPS = ARITH_OPS + CMP_OPS + LOGIC_OPS + SHIFT_OPS
UNARY_OPS = ("neg", "not")
# Math functions of one argument; all but abs/sign take and return float.
FUNCS = ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "tanh", "sigmoid", "sin", "cos",
         "abs", "sign", "floor", "ceil")
SAME_TYPE_FUNCS = ("abs", "sign")

_span = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Const:
    value: bool | int | float
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Var:
    """An index (b, h, q_idx, kv_idx), the score, a declared constant, or a block bound (q_lo ...)."""

    name: str
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Load:
    """`param[index...]`: an element of a captured tensor."""

    param: str
    index: tuple[Expr, ...]
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    x: Expr
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    a: Expr
    b: Expr
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Call:
    fn: str
    x: Expr
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Where:
    cond: Expr
    a: Expr
    b: Expr
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class Cast:
    x: Expr
    dtype: str
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class RangeReduce:
    """min or max of `param` over the box lo[i] <= index[i] <= hi[i] (block analysis only)."""

    op: str
    param: str
    lo: tuple[Expr, ...]
    hi: tuple[Expr, ...]
    dtype: str
    span: Span | None = _span


Expr = Const | Var | Load | Unary | Binary | Call | Where | Cast | RangeReduce


def children(e: Expr) -> tuple[Expr, ...]:
    match e:
        case Const() | Var():
            return ()
        case Load(index=idx):
            return idx
        case Unary(x=x) | Call(x=x) | Cast(x=x):
            return (x,)
        case Binary(a=a, b=b):
            return (a, b)
        case Where(cond=c, a=a, b=b):
            return (c, a, b)
        case RangeReduce(lo=lo, hi=hi):
            return lo + hi
    raise TypeError(f"not an Expr: {e!r}")


def with_children(e: Expr, kids: tuple[Expr, ...]) -> Expr:
    """`e` with new children; returns `e` itself when nothing changed."""
    if all(k is o for k, o in zip(kids, children(e))):
        return e
    match e:
        case Load():
            return Load(e.param, tuple(kids), e.dtype, e.span)
        case Unary():
            return Unary(e.op, kids[0], e.dtype, e.span)
        case Call():
            return Call(e.fn, kids[0], e.dtype, e.span)
        case Cast():
            return Cast(kids[0], e.dtype, e.span)
        case Binary():
            return Binary(e.op, kids[0], kids[1], e.dtype, e.span)
        case Where():
            return Where(kids[0], kids[1], kids[2], e.dtype, e.span)
        case RangeReduce():
            n = len(e.lo)
            return RangeReduce(e.op, e.param, tuple(kids[:n]), tuple(kids[n:]), e.dtype, e.span)
    return e


def walk(e: Expr):
    """Every node of `e`, parents before children, each distinct node once."""
    seen: set[int] = set()
    stack = [e]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        yield n
        stack.extend(reversed(children(n)))


def rewrite(e: Expr, fn) -> Expr:
    """Bottom-up rewrite: `fn(node_with_rewritten_children)` returns a replacement or None."""
    memo: dict[int, Expr] = {}

    def go(n: Expr) -> Expr:
        key = id(n)
        if key in memo:
            return memo[key]
        out = with_children(n, tuple(go(k) for k in children(n)))
        new = fn(out)
        memo[key] = out if new is None else new
        return memo[key]

    return go(e)


def size(e: Expr) -> int:
    return sum(1 for _ in walk(e))


# ---- typed builders -------------------------------------------------------------------------------

def promote(*dtypes: str) -> str:
    return FLOAT if FLOAT in dtypes else INT


def const(value, span: Span | None = None) -> Const:
    if isinstance(value, bool):
        return Const(value, BOOL, span)
    if isinstance(value, int):
        return Const(value, INT, span)
    if isinstance(value, float):
        return Const(value, FLOAT, span)
    raise DSLError(f"unsupported constant {value!r} of type {type(value).__name__}", span,
                   "use a Python bool, int or float")


def binary(op: str, a: Expr, b: Expr, span: Span | None = None) -> Binary:
    ta, tb = a.dtype, b.dtype
    if op in CMP_OPS:
        dtype = BOOL
    elif op in LOGIC_OPS:
        if FLOAT in (ta, tb):
            raise DSLError(f"`{SYMBOL[op]}` needs bool or int operands, got {ta} and {tb}", span,
                           "compare first (e.g. `x > 0`) or cast with int(...)")
        dtype = BOOL if ta == tb == BOOL else INT
    elif op in SHIFT_OPS:
        if FLOAT in (ta, tb):
            raise DSLError(f"`{SYMBOL[op]}` needs int operands, got {ta} and {tb}", span,
                           "cast with int(...)")
        dtype = INT
    elif op == "truediv":
        dtype = FLOAT
    elif op in ARITH_OPS:
        dtype = promote(ta, tb)
    else:
        raise ValueError(f"unknown binary op {op}")
    return Binary(op, a, b, dtype, span)


def unary(op: str, x: Expr, span: Span | None = None) -> Unary:
    if op == "not" and x.dtype == FLOAT:
        raise DSLError("`~` needs a bool or int operand, got float", span,
                       "compare first, e.g. `~(x > 0)`")
    dtype = INT if (op == "neg" and x.dtype == BOOL) else x.dtype
    return Unary(op, x, dtype, span)


def call(fn: str, x: Expr, span: Span | None = None) -> Call:
    if fn not in FUNCS:
        raise DSLError(f"unknown function `{fn}`", span, "known: " + ", ".join(FUNCS))
    if fn in SAME_TYPE_FUNCS:
        dtype = INT if x.dtype == BOOL else x.dtype
    else:
        dtype = FLOAT
    return Call(fn, x, dtype, span)


def where(cond: Expr, a: Expr, b: Expr, span: Span | None = None) -> Where:
    if cond.dtype != BOOL:
        raise DSLError(f"where() needs a bool condition, got {cond.dtype}", span,
                       "write a comparison such as `x > 0`")
    dtype = BOOL if a.dtype == b.dtype == BOOL else promote(a.dtype, b.dtype)
    return Where(cond, a, b, dtype, span)


def cast(x: Expr, dtype: str, span: Span | None = None) -> Expr:
    return x if x.dtype == dtype else Cast(x, dtype, span)


def clamp(x: Expr, lo: Expr | None, hi: Expr | None, span: Span | None = None) -> Expr:
    if lo is not None:
        x = binary("max", x, lo, span)
    if hi is not None:
        x = binary("min", x, hi, span)
    return x


SYMBOL = {
    "add": "+", "sub": "-", "mul": "*", "truediv": "/", "floordiv": "//", "mod": "%", "pow": "**",
    "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
    "and": "&", "or": "|", "xor": "^", "lshift": "<<", "rshift": ">>",
}
