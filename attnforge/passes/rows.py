"""A mask as a program evaluates it: for a fixed index (the query rows of a forward or dQ program,
the keys of a dK/dV program), over one tile of the other index after another.

- `separate(e, alone)`: an integer comparison whose sides are sums and differences of indices and
  integer literals, reading q_idx and kv_idx (`alone` once), becomes one with `alone` by itself on one
  side and the fixed index's terms on the other: `q_idx - kv_idx < 1024` -> `q_idx - 1024 < kv_idx`
  (alone = kv_idx) or `q_idx < kv_idx + 1024` (alone = q_idx). The other side is a value per fixed
  row of the tile, and a score costs one comparison instead of a subtraction and a comparison.
  Exact on integers (index ranges do not overflow).
- `hoist_rows(e, fixed)`: the largest subexpressions reading `fixed` but not the other index (a
  document id `ids[q_idx]`, `q_idx - 1024` once separated) become variables `__row0`, `__row1` ...,
  which a program computes once, before its loop over tiles, and not once a tile.

An analysis, like `affine`: the lowered program is unchanged; codegen asks.
"""
from __future__ import annotations

from ..ir.expr import BOOL, CMP_OPS, INT, Binary, Const, Expr, Unary, Var, binary, children, unary, walk, \
    with_children

FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le", "eq": "eq", "ne": "ne"}


def _terms(e: Expr, sign: int, out: list) -> bool:
    """Append (sign, leaf) for an integer sum of variables and literals; False if `e` is not one."""
    match e:
        case Const(dtype=t) | Var(dtype=t) if t == INT:
            out.append((sign, e))
            return True
        case Unary(op="neg", x=x):
            return _terms(x, -sign, out)
        case Binary(op="add" | "sub", a=a, b=b, dtype=t) if t == INT:
            return _terms(a, sign, out) and _terms(b, sign if e.op == "add" else -sign, out)
    return False


def _sum(terms: list) -> Expr:
    """The terms' sum, variables first and literals folded into one."""
    total = sum(sign * leaf.value for sign, leaf in terms if isinstance(leaf, Const))
    out = None
    for sign, leaf in terms:
        if isinstance(leaf, Var):
            out = (leaf if sign > 0 else unary("neg", leaf)) if out is None \
                else binary("add" if sign > 0 else "sub", out, leaf)
    if out is None:
        return Const(total, INT)
    return out if total == 0 else binary("add" if total > 0 else "sub", out, Const(abs(total), INT))


def _separated(e: Binary, alone: str) -> Expr | None:
    terms: list = []
    if not (_terms(e.a, 1, terms) and _terms(e.b, -1, terms)):
        return None
    names = {leaf.name for _, leaf in terms if isinstance(leaf, Var)}
    if not {"q_idx", "kv_idx"} <= names <= {"q_idx", "kv_idx", "b", "h"}:
        return None
    x = Var(alone, INT)
    n = sum(sign for sign, leaf in terms if leaf == x)
    rows = [(sign, leaf) for sign, leaf in terms if leaf != x]
    if n == -1:    # a - b = R - x: a op b <=> R op x
        out = Binary(e.op, _sum(rows), x, BOOL)
    elif n == 1:   # a - b = R + x: a op b <=> -R op x, flipped
        out = Binary(FLIP[e.op], _sum([(-s, leaf) for s, leaf in rows]), x, BOOL)
    else:
        return None
    return None if out == Binary(e.op, e.a, e.b, BOOL) else out


def separate(e: Expr, alone: str = "kv_idx") -> Expr:
    """`e` with its integer index comparisons in the form `rows op alone` (module docstring)."""
    def go(n: Expr) -> Expr:
        n = with_children(n, tuple(go(k) for k in children(n)))
        if isinstance(n, Binary) and n.op in CMP_OPS and n.a.dtype == INT and n.b.dtype == INT:
            return _separated(n, alone) or n
        return n
    return go(e)


def _reads(e: Expr) -> set[str]:
    return {n.name for n in walk(e) if isinstance(n, Var)}


def hoist_rows(e: Expr, fixed: str = "q_idx") -> tuple[Expr, list[tuple[str, Expr]]]:
    """(e with its largest row-only subexpressions replaced by variables `__row<i>`, [(name,
    subexpression)]): those read `fixed` and nothing beyond it, b and h, and are more than `fixed`."""
    found: dict[Expr, str] = {}
    rows = {fixed, "b", "h"}

    def go(n: Expr) -> Expr:
        reads = _reads(n)
        if fixed in reads and reads <= rows and not isinstance(n, Var):
            name = found.setdefault(n, f"__row{len(found)}")
            return Var(name, n.dtype)
        return with_children(n, tuple(go(k) for k in children(n)))

    out = go(e)
    return out, [(name, sub) for sub, name in found.items()]
