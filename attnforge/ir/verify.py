"""Structural checks on a Program. Separate from every transform; `lower` runs it on its input and,
with ATTN_DEBUG=1, after every pass."""
from __future__ import annotations

import networkx as nx

from .errors import DSLError
from .expr import (BOOL, FLOAT, INT, Binary, Call, Cast, Const, Expr, Load, RangeReduce, Unary, Var,
                   Where, binary, call, unary, walk, where)
from .program import (INDEX_VARS, LinearBranch, Program, SoftmaxBranch, StaticSelect)

BLOCK_VARS = ("q_lo", "q_hi", "kv_lo", "kv_hi")


def _check_types(e: Expr) -> None:
    """Recompute each node's type with the builders; a mismatch is a compiler bug."""
    for n in walk(e):
        match n:
            case Binary(op="matmul"):
                want = n.dtype
            case Binary(op=op, a=a, b=b):
                want = binary(op, a, b).dtype
            case Unary(op=op, x=x):
                want = unary(op, x).dtype
            case Call(fn=fn, x=x):
                want = call(fn, x).dtype
            case Where(cond=c, a=a, b=b):
                want = where(c, a, b).dtype
            case Const(value=v):
                want = {bool: BOOL, int: INT, float: FLOAT}[type(v)]
            case _:
                want = n.dtype
        if want != n.dtype:
            raise AssertionError(f"IR type error: {n!r} has dtype {n.dtype}, expected {want}")


def _check_expr(e: Expr, prog: Program, allowed: set[str], where_: str) -> None:
    _check_types(e)
    for n in walk(e):
        match n:
            case Var(name=name) if name not in allowed:
                raise DSLError(f"`{name}` is not defined in {where_}", n.span,
                               "allowed names: " + ", ".join(sorted(allowed)))
            case Load(param=p, index=idx) | RangeReduce(param=p, lo=idx):
                try:
                    param = prog.param(p)
                except KeyError:
                    raise DSLError(f"unknown tensor `{p}` in {where_}", n.span,
                                   "declare it as a parameter, e.g. `attention v(" + p
                                   + ": f32[H])`") from None
                if len(idx) != len(param.shape):
                    raise DSLError(f"`{p}` has {len(param.shape)} dimension(s) but is indexed with "
                                   f"{len(idx)}", n.span, f"write {p}[" + ", ".join(
                                       "i" * (k + 1) for k in range(len(param.shape))) + "]")
                for i in idx:
                    if i.dtype == FLOAT:
                        raise DSLError(f"index of `{p}` must be an integer, got float", n.span,
                                       "use int(...) or //")
            case Cast(x=x) if x.dtype == n.dtype:
                raise AssertionError(f"no-op cast {n!r}")


def verify(prog: Program) -> Program:
    names = [p.name for p in prog.params] + [c.name for c in prog.consts]
    names += [s.name for s in prog.selections] + [b.name for b in prog.branches]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise DSLError(f"name(s) defined twice: {', '.join(sorted(dup))}", None, "rename one of them")
    consts = {c.name for c in prog.consts}
    index_names = set(INDEX_VARS) | consts
    block_names = {"b", "h"} | set(BLOCK_VARS) | consts
    sel_names = {s.name for s in prog.selections}
    for s in prog.selections:
        if isinstance(s, StaticSelect):
            _check_expr(s.mask, prog, index_names, f"selection `{s.name}`")
            if s.mask.dtype != BOOL:
                raise DSLError(f"mask `{s.name}` must be bool, got {s.mask.dtype}", s.mask.span,
                               "write a comparison such as `q_idx >= kv_idx`")
    for br in prog.branches:
        if br.select is not None and br.select.name not in sel_names:
            raise DSLError(f"branch `{br.name}` reads unknown selection `{br.select.name}`", br.span,
                           "declare it with `select NAME = ...`")
        if isinstance(br, SoftmaxBranch):
            _check_expr(br.score, prog, index_names | {"score"}, f"branch `{br.name}`")
        if isinstance(br, LinearBranch) and br.decay is not None:
            _check_expr(br.decay, prog, index_names, f"branch `{br.name}`")
    outs = {b.name for b in prog.branches} | {p.name for p in prog.params}
    for n in walk(prog.combiner.out):
        if isinstance(n, Var) and n.name not in outs:
            raise DSLError(f"`out` reads unknown branch `{n.name}`", n.span,
                           "branches: " + ", ".join(sorted(b.name for b in prog.branches)))
    for rule in prog.block_rules:
        _check_expr(rule.may_true, prog, block_names, "a block rule")
        _check_expr(rule.may_false, prog, block_names, "a block rule")
    if not nx.is_directed_acyclic_graph(prog.graph()):
        raise DSLError("the op graph has a cycle", None, "a branch may not read its own output")
    return prog
