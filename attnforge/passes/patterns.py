"""A small pattern language so algebraic rewrites can be written as data.

`P.x`, `P.y`, `P.z` match any expression (one binding per name); `P.xi` matches int-typed
expressions, `P.xb` bool-typed ones; Python literals match equal literals of the same type. Patterns
use the DSL's operators: `P.x + 0`, `~~P.xb`, `where(P.c, P.x, P.x)`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.expr import (BOOL, INT, Binary, Call, Const, Expr, Unary, Where, binary, call, const,
                       unary, where)


@dataclass(frozen=True)
class Pat:
    kind: str  # "var" | "const" | "binary" | "unary" | "call" | "where"
    op: str = ""
    args: tuple = ()
    dtype: str | None = None

    def _b(op):  # noqa: N805 - builds operator methods
        return lambda self, other: Pat("binary", op, (self, lift(other)))

    def _rb(op):  # noqa: N805
        return lambda self, other: Pat("binary", op, (lift(other), self))

    __add__, __radd__ = _b("add"), _rb("add")
    __sub__, __rsub__ = _b("sub"), _rb("sub")
    __mul__, __rmul__ = _b("mul"), _rb("mul")
    __truediv__ = _b("truediv")
    __floordiv__ = _b("floordiv")
    __mod__ = _b("mod")
    __and__, __rand__ = _b("and"), _rb("and")
    __or__, __ror__ = _b("or"), _rb("or")
    __lt__, __le__, __gt__, __ge__ = _b("lt"), _b("le"), _b("gt"), _b("ge")
    __eq__, __ne__ = _b("eq"), _b("ne")  # type: ignore[assignment]
    __hash__ = object.__hash__

    def __neg__(self):
        return Pat("unary", "neg", (self,))

    def __invert__(self):
        return Pat("unary", "not", (self,))


def lift(v) -> Pat:
    return v if isinstance(v, Pat) else Pat("const", args=(v,))


def pvar(name: str, dtype: str | None = None) -> Pat:
    return Pat("var", name, (), dtype)


def pfn(fn: str, x) -> Pat:
    return Pat("call", fn, (lift(x),))


def pmin(a, b) -> Pat:
    return Pat("binary", "min", (lift(a), lift(b)))


def pmax(a, b) -> Pat:
    return Pat("binary", "max", (lift(a), lift(b)))


def pwhere(c, a, b) -> Pat:
    return Pat("where", "", (lift(c), lift(a), lift(b)))


class P:
    x, y, z, c = pvar("x"), pvar("y"), pvar("z"), pvar("c", BOOL)
    xi, yi = pvar("xi", INT), pvar("yi", INT)
    xb, yb = pvar("xb", BOOL), pvar("yb", BOOL)


def match(p: Pat, e: Expr, env: dict) -> bool:
    if p.kind == "var":
        if p.dtype is not None and e.dtype != p.dtype:
            return False
        if p.op in env:
            return env[p.op] == e
        env[p.op] = e
        return True
    if p.kind == "const":
        v = p.args[0]
        return isinstance(e, Const) and type(e.value) is type(v) and e.value == v
    if p.kind == "binary":
        return isinstance(e, Binary) and e.op == p.op and match(p.args[0], e.a, env) \
            and match(p.args[1], e.b, env)
    if p.kind == "unary":
        return isinstance(e, Unary) and e.op == p.op and match(p.args[0], e.x, env)
    if p.kind == "call":
        return isinstance(e, Call) and e.fn == p.op and match(p.args[0], e.x, env)
    if p.kind == "where":
        return isinstance(e, Where) and all(match(q, x, env) for q, x in
                                            zip(p.args, (e.cond, e.a, e.b)))
    return False


def build(p: Pat, env: dict, span=None) -> Expr:
    """Instantiate a replacement pattern (a Pat or a plain literal)."""
    p = lift(p)
    match p.kind:
        case "var":
            return env[p.op]
        case "const":
            return const(p.args[0], span)
        case "binary":
            return binary(p.op, build(p.args[0], env, span), build(p.args[1], env, span), span)
        case "unary":
            return unary(p.op, build(p.args[0], env, span), span)
        case "call":
            return call(p.op, build(p.args[0], env, span), span)
        case "where":
            return where(*(build(q, env, span) for q in p.args), span)
    raise ValueError(p.kind)
