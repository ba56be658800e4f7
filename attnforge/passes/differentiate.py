"""differentiate: symbolic derivatives of each softmax branch's score_mod, for the backward.

Before: a simplified Program. After: `prog.grads` holds, per SoftmaxBranch, d score_mod / d score
and, for every distinct read of a floating captured tensor (`bias[h, q_idx - kv_idx]`; a tensor
read at two different indices gives two entries), d score_mod / d that read. Derivatives come from
sympy (where/Piecewise pass through; min/max give Heaviside steps) and are simplified by the rule
table. The runtime scatters each read's gradient back to the tensor.
"""
from __future__ import annotations

from dataclasses import replace

from ..ir.errors import DSLError
from ..ir.expr import FLOAT, Const, Load, Var, walk
from ..ir.program import Program, ScoreGrad, SoftmaxBranch
from .simplify import apply_rules

SCORE = Var("score", FLOAT)


def differentiate(prog: Program) -> Program:
    grads = []
    for br in prog.branches:
        if not isinstance(br, SoftmaxBranch):
            continue
        loads = tuple(dict.fromkeys(n for n in walk(br.score) if isinstance(n, Load)
                                    and n.dtype == FLOAT))
        if br.score == SCORE:  # the score as it is (masks only): no sympy
            grads.append(ScoreGrad(br.name, Const(1.0, FLOAT), ()))
            continue
        from .sympy_bridge import Unsupported, derivative

        try:
            d = derivative(br.score, (SCORE,) + loads)
        except (Unsupported, TypeError, ValueError) as err:
            raise DSLError(f"cannot differentiate the score of branch `{br.name}`: {err}",
                           br.score.span, "use differentiable operations on the score") from None
        d = tuple(apply_rules(x) for x in d)
        grads.append(ScoreGrad(br.name, d[0], tuple(zip(loads, d[1:]))))
    return replace(prog, grads=tuple(grads))
