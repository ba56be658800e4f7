"""Score mods affine in the score, and those whose offset splits into a row part and a column part.

A score_mod `f(score, b, h, q_idx, kv_idx) = a * score + c(b, h, q_idx, kv_idx)` with `a` reading
only b and h (a constant, a per-head temperature) lets the forward compute the base-2 score of a
tile as one fused multiply-add, `s * (sm_scale * a * log2 e) + c * log2 e`, instead of scaling,
adding and converting to base 2 one after the other.

Where moreover `c = row(b, h, q_idx) + col(b, h, kv_idx)` (ALiBi's `slope * (kv_idx - q_idx)`, a
per-key bias), the row part is the same for a whole row of the softmax, which does not see it: the
forward adds `c(q0, kv_idx)` (q0: the query tile's first row, a scalar, so this is one vector of
the tile's columns) and adds the rest of the row part, `c(q_idx, q0) - c(q0, q0)`, to the LSE
only. Both are the offset as written (not expanded): an index difference such as `kv_idx - q0`
stays an exact integer before it meets a float, as `kv_idx - q_idx` did (an expanded
`slope * kv_idx - slope * q_idx` would cancel two large floats at long lengths).

An analysis, like `toeplitz`: the lowered program is unchanged; codegen asks.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..ir.expr import FLOAT, INT, Const, Expr, Var, binary, rewrite, walk
from ..ir.program import Program

SCORE = Var("score", FLOAT)
Q0 = Var("q0", INT)  # the query tile's first row, a scalar in the kernel
_MAX_TERMS = 64  # an expansion with more terms than this is not looked at further


@dataclass(frozen=True)
class AffineScore:
    scale: Expr       # d score_mod / d score: reads b, h and constants only
    offset: Expr      # score_mod at score = 0, as written
    separable: bool   # offset = row(q_idx) + col(kv_idx) (+ b, h): `col_offset`, `row_offset`

    def col_offset(self) -> Expr:
        """The offset at q_idx = q0: the tile's columns' part, plus row(q0)."""
        return _subst(self.offset, {"q_idx": Q0})

    def row_offset(self) -> Expr:
        """row(q_idx) - row(q0), as offset(q_idx, q0) - offset(q0, q0): what the LSE adds back."""
        return _tidy(binary("sub", _subst(self.offset, {"kv_idx": Q0}),
                            _subst(self.offset, {"q_idx": Q0, "kv_idx": Q0})))


def _subst(e: Expr, names: dict[str, Expr]) -> Expr:
    return _tidy(rewrite(e, lambda n: names.get(n.name) if isinstance(n, Var) and n.dtype == INT else None))


def _tidy(e: Expr) -> Expr:
    """The simplifier's rewrite rules (`x - x`, `x + 0` ...), no sympy: the expression keeps its form."""
    from .simplify import apply_rules

    return apply_rules(e)


def _index_vars(e: Expr) -> set[str]:
    return {n.name for n in walk(e) if isinstance(n, Var) and n.name in ("q_idx", "kv_idx", "score")}


def affine_score(prog: Program) -> AffineScore | None:
    """The variant's score_mod as `a * score + c` (`AffineScore`), or None: no score_mod, one that
    is not affine in the score (softcap's tanh), one whose slope `a` reads an index or is 0, or one
    sympy does not model around the score."""
    flex = prog.as_flex()
    if flex is None or flex[0] == SCORE or SCORE not in set(walk(flex[0])):
        return None
    score = flex[0]
    from .sympy_bridge import Bridge, Unsupported  # sympy: only for programs with a score_mod

    bridge = Bridge()
    try:
        s = bridge.to_sympy(score)
    except Unsupported:
        return None
    sym = bridge.symbols.get(SCORE)
    # the score inside an operation sympy keeps opaque (a comparison, a load's index): not affine
    if sym is None or any(not isinstance(leaf, Var) and "score" in _index_vars(leaf)
                          for leaf in bridge.leaves.values()):
        return None
    import sympy as sp

    slope = sp.diff(s, sym)
    if slope == 0 or any(_reads(bridge, x) & {"q_idx", "kv_idx", "score"} for x in slope.free_symbols):
        return None
    try:
        scale = bridge.from_sympy(slope)
    except Unsupported:
        return None
    offset = _tidy(rewrite(score, lambda n: Const(0.0, FLOAT) if n == SCORE else None))
    terms = sp.Add.make_args(sp.expand(s - slope * sym))
    separable = len(terms) <= _MAX_TERMS and not any(
        {"q_idx", "kv_idx"} <= set().union(*(_reads(bridge, x) for x in t.free_symbols)) for t in terms)
    return AffineScore(scale, offset, separable)


def _reads(bridge, sym) -> set[str]:
    """Index variables (q_idx, kv_idx, score) a sympy symbol of `bridge` stands for or reads."""
    return _index_vars(bridge.leaves[sym])
