"""IR -> DSL text. `parse(print_program(p)) == p` for every program a front end can build.

Operator precedence is Python's (comparisons bind looser than `|`), so parentheses appear exactly
where Python would need them.
"""
from __future__ import annotations

import math

from .expr import (SYMBOL, Binary, Call, Cast, Const, Expr, Load, RangeReduce, Unary, Var, Where)
from .program import (LinearBranch, PooledBranch, Program, SoftmaxBranch, StaticSelect, TopKSelect)

# Python's levels, loosest first.
CMP, OR, XOR, AND, SHIFT, ADD, MUL, UNARY, POW, ATOM = range(10)
PREC = {"lt": CMP, "le": CMP, "gt": CMP, "ge": CMP, "eq": CMP, "ne": CMP, "or": OR, "xor": XOR,
        "and": AND, "lshift": SHIFT, "rshift": SHIFT, "add": ADD, "sub": ADD, "mul": MUL,
        "truediv": MUL, "floordiv": MUL, "mod": MUL, "matmul": MUL, "pow": POW}
CAST_NAME = {"float": "float", "int": "int", "bool": "bool"}


def format_const(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "(-inf)"
        text = repr(value)
        return f"({text})" if value < 0 or text.startswith("-") else text
    return f"({value})" if value < 0 else str(value)


def format_expr(e: Expr) -> str:
    return _fmt(e)[0]


def _wrap(part: tuple[str, int], need: int) -> str:
    text, prec = part
    return text if prec >= need else f"({text})"


def _fmt(e: Expr) -> tuple[str, int]:
    match e:
        case Const(value=v):
            return format_const(v), ATOM
        case Var(name=n):
            return n, ATOM
        case Load(param=p, index=idx):
            return f"{p}[{', '.join(format_expr(i) for i in idx)}]", ATOM
        case Call(fn=fn, x=x):
            return f"{fn}({format_expr(x)})", ATOM
        case Cast(x=x, dtype=t):
            return f"{CAST_NAME[t]}({format_expr(x)})", ATOM
        case Where(cond=c, a=a, b=b):
            return f"where({format_expr(c)}, {format_expr(a)}, {format_expr(b)})", ATOM
        case RangeReduce(op=op, param=p, lo=lo, hi=hi):
            box = ", ".join(f"{format_expr(a)}:{format_expr(b)}" for a, b in zip(lo, hi))
            return f"{op}_over({p}[{box}])", ATOM
        case Unary(op=op, x=x):
            sym = "-" if op == "neg" else "~"
            return sym + _wrap(_fmt(x), UNARY), UNARY
        case Binary(op=op, a=a, b=b) if op in ("min", "max"):
            return f"{op}({format_expr(a)}, {format_expr(b)})", ATOM
        case Binary(op=op, a=a, b=b):
            p = PREC[op]
            if op == "pow":
                return f"{_wrap(_fmt(a), ATOM)} ** {_wrap(_fmt(b), UNARY)}", POW
            if p == CMP:
                return f"{_wrap(_fmt(a), CMP + 1)} {SYMBOL[op]} {_wrap(_fmt(b), CMP + 1)}", CMP
            sym = "@" if op == "matmul" else SYMBOL[op]
            return f"{_wrap(_fmt(a), p)} {sym} {_wrap(_fmt(b), p + 1)}", p
    raise TypeError(f"not an Expr: {e!r}")


def _sel_ref(r) -> str:
    return "" if r is None else f" on {'~' if r.negate else ''}{r.name}"


def _dims(shape) -> str:
    return ", ".join(str(d) for d in shape)


def print_program(p: Program) -> str:
    params = ", ".join(f"{q.name}: {q.dtype}[{_dims(q.shape)}]" for q in p.params)
    lines = [f"attention {p.name}({params}) {{"]
    for c in p.consts:
        lines.append(f"  const {c.name}: {c.dtype} = {format_const(c.value)}")
    flex = p.as_flex()
    if flex is not None:
        score, mask = flex
        if not (isinstance(score, Var) and score.name == "score"):
            lines.append(f"  score = {format_expr(score)}")
        if mask is not None:
            lines.append(f"  mask = {format_expr(mask)}")
    else:
        lines.extend("  " + _selection(s) for s in p.selections)
        lines.extend("  " + _branch(b) for b in p.branches)
        if p.combiner.normalizer != "softmax":
            lines.append(f"  normalize {p.combiner.normalizer}")
        lines.append(f"  out = {format_expr(p.combiner.out)}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _selection(s) -> str:
    match s:
        case StaticSelect(name=n, mask=m):
            return f"select {n} = static({format_expr(m)})"
        case TopKSelect():
            force = ", ".join(s.force)
            return (f"select {s.name} = topk(block={s.block}, k={s.k}, per={s.per}, pool={s.pool}"
                    f", force=[{force}])")
    raise TypeError(s)


def _branch(b) -> str:
    match b:
        case SoftmaxBranch(name=n, score=sc, select=r):
            return f"branch {n} = softmax({format_expr(sc)}){_sel_ref(r)}"
        case LinearBranch(name=n, phi=phi, decay=d, select=r):
            decay = "" if d is None else f", decay={format_expr(d)}"
            return f"branch {n} = linear(phi={phi}{decay}){_sel_ref(r)}"
        case PooledBranch(name=n, block=blk, select=r):
            return f"branch {n} = pooled(block={blk}){_sel_ref(r)}"
    raise TypeError(b)
