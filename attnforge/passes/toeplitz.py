"""Which learnable-tensor reads are indexed by the query-key distance (Toeplitz reads).

A read `t[f(b, h, q_idx, kv_idx)]` is Toeplitz when f depends on q_idx and kv_idx only through
q_idx - kv_idx: substituting q_idx = kv_idx + r, sympy must cancel kv_idx everywhere. Parts sympy
does not model (floor division, comparisons, nested loads ...) are checked child by child, so the
answer is conservative: "no" whenever the cancellation is not shown. The gradient of a Toeplitz
read is a sum along diagonals of the score grid, which a dedicated kernel computes without atomics
(`bwd_diag`); other reads use the chunked recompute of `runtime/param_grads.py`.

Kernels read such a tensor through a distance table (`distance_tables`): its values for every
distance q_idx - kv_idx of the call's lengths, gathered once per call (`runtime/tables.py`), so a
score reads table[q_idx - kv_idx] with no index arithmetic, clamping or mask per score.
"""
from __future__ import annotations

from ..ir.expr import INT, Expr, Load, Var, binary, children, rewrite, walk
from ..ir.program import Program

KV = Var("kv_idx", INT)
R = Var("_r", INT)


def _reads_kv(e: Expr) -> bool:
    return any(n == KV for n in walk(e))


def _kv_free(e: Expr) -> bool:
    """e (q_idx already replaced by kv_idx + _r) provably does not depend on kv_idx."""
    if not _reads_kv(e):
        return True
    from .sympy_bridge import Bridge, Unsupported  # sympy: only for programs with such reads

    bridge = Bridge()
    try:
        s = bridge.to_sympy(e).expand()
    except Unsupported:
        return all(_kv_free(c) for c in children(e))
    for sym in s.free_symbols:
        leaf = bridge.leaves[sym]
        if leaf == KV:
            return False
        # an operation sympy keeps opaque (floor division, modulo ...; `e` itself, maybe) is free of
        # kv_idx where its operands are
        if not isinstance(leaf, Var) and _reads_kv(leaf) and not all(_kv_free(c) for c in children(leaf)):
            return False
    return True


def is_toeplitz(load: Load) -> bool:
    shifted = [rewrite(i, lambda n: binary("add", KV, R) if n == Var("q_idx", INT) else n)
               for i in load.index]
    return all(_kv_free(i) for i in shifted)


def toeplitz_loads(prog: Program) -> list[int]:
    """Positions in the program's `d_loads` of the learnable reads indexed by q_idx - kv_idx."""
    (grad,) = prog.grads
    return [i for i, (load, _) in enumerate(grad.d_loads) if is_toeplitz(load)]


def reads(load: Load, name: str) -> bool:
    """The read's index uses the variable `name` (b, h, q_idx, kv_idx)."""
    return any(isinstance(n, Var) and n.name == name for i in load.index for n in walk(i))


def reads_batch(load: Load) -> bool:
    """The read's index depends on the batch (its band sums cannot be pooled across batches)."""
    return reads(load, "b")


def distance_tables(prog: Program) -> list[Load]:
    """The reads of the score, mask and score derivative that kernels take from distance tables, in
    first-use order: indexed by q_idx - kv_idx (and any of b and h), reading both (a read of one, as a
    document mask's, is not looked at further: no sympy for it), with no read inside the index (a
    table is gathered from the index alone)."""
    score, mask = prog.as_flex()
    (grad,) = prog.grads
    found: dict[Load, None] = {}
    for e in (score, *([mask] if mask is not None else []), grad.d_score):
        for n in walk(e):
            if (isinstance(n, Load) and n not in found and reads(n, "q_idx") and reads(n, "kv_idx")
                    and not any(isinstance(m, Load) for i in n.index for m in walk(i)) and is_toeplitz(n)):
                found[n] = None
    return list(found)
