"""simplify: algebraic rewrites (a table of patterns) and sympy on float arithmetic.

Before: a canonical Program (constants inlined and folded). After: no subexpression matches a rule
of RULES, literal-only operators are folded, and each maximal float arithmetic subtree is replaced
by sympy's smallest rewrite (`_bounded_simplify`) when that has fewer IR nodes. Meaning is preserved
for every input where the original is finite (tests check each rule and the sympy step on random
points).
"""
from __future__ import annotations

from functools import lru_cache

from ..ir.expr import (FLOAT, Binary, Call, Expr, Unary, cast, children, rewrite, size,
                       with_children)
from ..ir.program import Program
from .canonicalize import fold_constants, map_exprs
from .patterns import P, build, match, pfn, pmax, pmin, pwhere

x, y, xi, yi, xb, c = P.x, P.y, P.xi, P.yi, P.xb, P.c

RULES = [
    # additive and multiplicative identities
    ("add-zero", x + 0, x), ("zero-add", 0 + x, x), ("add-zero-f", x + 0.0, x),
    ("zero-add-f", 0.0 + x, x), ("sub-zero", x - 0, x), ("sub-zero-f", x - 0.0, x),
    ("mul-one", x * 1, x), ("one-mul", 1 * x, x), ("mul-one-f", x * 1.0, x),
    ("one-mul-f", 1.0 * x, x), ("div-one-f", x / 1.0, x), ("floordiv-one", xi // 1, xi),
    ("mul-zero-int", xi * 0, 0), ("zero-mul-int", 0 * xi, 0), ("sub-self-int", xi - xi, 0),
    ("mod-one", xi % 1, 0),
    # negation
    ("neg-neg", -(-x), x), ("add-neg", x + (-y), x - y), ("sub-neg", x - (-y), x + y),
    ("neg-add", (-x) + y, y - x),
    # boolean algebra
    ("and-true", xb & True, xb), ("true-and", True & xb, xb), ("and-false", xb & False, False),
    ("false-and", False & xb, False), ("or-false", xb | False, xb), ("false-or", False | xb, xb),
    ("or-true", xb | True, True), ("true-or", True | xb, True), ("and-self", xb & xb, xb),
    ("or-self", xb | xb, xb), ("not-not", ~(~x), x), ("and-not-self", xb & ~xb, False),
    ("or-not-self", xb | ~xb, True),
    # negated integer comparisons (not for floats: NaN breaks them)
    ("not-lt", ~(xi < yi), xi >= yi), ("not-le", ~(xi <= yi), xi > yi),
    ("not-gt", ~(xi > yi), xi <= yi), ("not-ge", ~(xi >= yi), xi < yi),
    ("not-eq", ~(xi == yi), xi != yi), ("not-ne", ~(xi != yi), xi == yi),
    ("le-self-int", xi <= xi, True), ("ge-self-int", xi >= xi, True), ("eq-self-int", xi == xi, True),
    ("lt-self-int", xi < xi, False), ("gt-self-int", xi > xi, False), ("ne-self-int", xi != xi, False),
    # where, min, max, abs
    ("where-same", pwhere(c, x, x), x), ("where-not", pwhere(~c, x, y), pwhere(c, y, x)),
    ("where-bool", pwhere(c, True, False), c), ("where-not-bool", pwhere(c, False, True), ~c),
    ("min-self", pmin(x, x), x), ("max-self", pmax(x, x), x),
    ("abs-abs", pfn("abs", pfn("abs", x)), pfn("abs", x)), ("abs-neg", pfn("abs", -x), pfn("abs", x)),
]


def apply_rules(e: Expr) -> Expr:
    def step(n: Expr) -> Expr | None:
        for _, pat, rep in RULES:
            env: dict = {}
            if match(pat, n, env):
                out = build(rep, env, n.span)
                if out.dtype == n.dtype:
                    return step(out) or out
        return None

    prev = None
    while prev is not e:
        prev, e = e, fold_constants(rewrite(e, step))
    return e


_ARITH = ("add", "sub", "mul", "truediv", "pow")


def _is_arith(n: Expr) -> bool:
    match n:
        case Binary(op=op) if op in _ARITH:
            return n.dtype == FLOAT
        case Unary(op="neg") | Call():
            return n.dtype == FLOAT
    return False


def _bounded_simplify(s):
    """The smallest of a few rewrites whose cost stays polynomial in the tree's size. Not
    `sp.simplify`: its trigonometric and hyperbolic search ran for minutes on scores like
    `-(exp(tanh(score)) + sigmoid(-0.01 * doc[q_idx + kv_idx]))` (found by a property test)."""
    import sympy as sp

    candidates = [s]
    for rewrite_ in (sp.factor_terms, sp.cancel, sp.powsimp, sp.together, lambda t: sp.powsimp(sp.expand(t))):
        try:
            candidates.append(rewrite_(s))
        except (sp.PolynomialError, NotImplementedError):
            continue
    return min(candidates, key=sp.count_ops)


@lru_cache(maxsize=4096)
def sympy_simplify(e: Expr) -> Expr:
    """sympy's simplification of one float arithmetic tree, kept only when it is smaller."""
    if size(e) > 40:
        return e
    # sympy (~0.4 s to import) only for programs with float arithmetic: masks alone never load it
    from .sympy_bridge import Bridge, Unsupported

    br = Bridge()
    try:
        s = br.to_sympy(e)
        out = cast(br.from_sympy(_bounded_simplify(s)), FLOAT)
    except (Unsupported, TypeError, ValueError, RecursionError):
        return e
    out = apply_rules(out)
    return out if size(out) < size(e) and out.dtype == e.dtype else e


def _simplify_expr(e: Expr) -> Expr:
    def go(n: Expr) -> Expr:
        if _is_arith(n):
            return sympy_simplify(n)
        return with_children(n, tuple(go(k) for k in children(n)))

    return apply_rules(go(apply_rules(e)))


def simplify(prog: Program) -> Program:
    return map_exprs(prog, _simplify_expr)
