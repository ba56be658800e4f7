"""canonicalize: one normal form for what the front ends produce.

Before: any verified Program (constants referenced by name, `true & m` from and_masks, casts of
literals). After: declared constants are inlined into every expression and into parameter shapes,
every operator whose operands are all literals is folded, casts of literals are folded, and
`StaticSelect`s whose mask is the literal `true` are dropped (their branches read everything).
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.expr import (Binary, Call, Cast, Const, Expr, Unary, Var, Where, rewrite)
from ..ir.program import (LinearBranch, Program, SoftmaxBranch, StaticSelect)
from .fold import fold_binary, fold_call, fold_unary, to_type


def fold_constants(e: Expr, consts: dict[str, Const] | None = None) -> Expr:
    consts = consts or {}

    def step(n: Expr) -> Expr | None:
        match n:
            case Var(name=name) if name in consts:
                return replace(consts[name], span=n.span)
            case Binary(op=op, a=Const(value=a), b=Const(value=b)) if op != "matmul":
                v = fold_binary(op, a, b, n.dtype)
            case Unary(op=op, x=Const(value=x)):
                v = fold_unary(op, x, n.dtype)
            case Call(fn=fn, x=Const(value=x)):
                v = fold_call(fn, x, n.dtype)
            case Cast(x=Const(value=x)):
                v = to_type(x, n.dtype)
            case Where(cond=Const(value=c), a=a, b=b) if a.dtype == b.dtype == n.dtype:
                return a if c else b
            case _:
                return None
        return None if v is None else Const(v, n.dtype, n.span)

    return rewrite(e, step)


def map_exprs(prog: Program, fn) -> Program:
    """Apply `fn` to every expression of every selection, branch and the combiner."""
    sels = tuple(replace(s, mask=fn(s.mask)) if isinstance(s, StaticSelect) else s
                 for s in prog.selections)
    branches = []
    for br in prog.branches:
        if isinstance(br, SoftmaxBranch):
            br = replace(br, score=fn(br.score))
        elif isinstance(br, LinearBranch) and br.decay is not None:
            br = replace(br, decay=fn(br.decay))
        branches.append(br)
    return replace(prog, selections=sels, branches=tuple(branches))


def canonicalize(prog: Program) -> Program:
    consts = {c.name: Const(c.value, c.dtype) for c in prog.consts}
    values = {c.name: c.value for c in prog.consts}
    params = tuple(replace(p, shape=tuple(values.get(d, d) for d in p.shape)) for p in prog.params)
    out = map_exprs(replace(prog, params=params, consts=()), lambda e: fold_constants(e, consts))
    trivial = {s.name for s in out.selections
               if isinstance(s, StaticSelect) and s.mask == Const(True, "bool")}
    if trivial:
        branches = tuple(replace(b, select=None) if b.select is not None and b.select.name in trivial
                         and not b.select.negate else b for b in out.branches)
        out = replace(out, selections=tuple(s for s in out.selections if s.name not in trivial),
                      branches=branches)
    return out
