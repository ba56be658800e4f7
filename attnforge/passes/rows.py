"""A mask as a forward program evaluates it: for fixed query rows, over one key tile after another.

- `separate(e)`: an integer comparison whose sides are sums and differences of indices and integer
  literals, reading q_idx and kv_idx (kv_idx once), becomes one with the rows' terms on one side and
  kv_idx alone on the other: `q_idx - kv_idx < 1024` -> `q_idx - 1024 < kv_idx`. The rows' side is a
  value per row of the tile, and a score costs one comparison instead of a subtraction and a
  comparison. Exact on integers (index ranges do not overflow).
- `hoist_rows(e)`: the largest subexpressions reading q_idx but not kv_idx (a document id
  `ids[q_idx]`, `q_idx - 1024` once separated) become variables `__row0`, `__row1` ..., which a
  forward program computes once, before its loop over key tiles, and not once a tile.

An analysis, like `affine`: the lowered program is unchanged; codegen asks.
"""
from __future__ import annotations

from ..ir.expr import BOOL, CMP_OPS, INT, Binary, Const, Expr, Unary, Var, binary, children, unary, walk, \
    with_children

ROWS = frozenset({"q_idx", "b", "h"})  # what a forward program's rows fix
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


def _separated(e: Binary) -> Expr | None:
    terms: list = []
    if not (_terms(e.a, 1, terms) and _terms(e.b, -1, terms)):
        return None
    names = {leaf.name for _, leaf in terms if isinstance(leaf, Var)}
    if "kv_idx" not in names or "q_idx" not in names or not names <= ROWS | {"kv_idx"}:
        return None
    kv = sum(sign for sign, leaf in terms if isinstance(leaf, Var) and leaf.name == "kv_idx")
    rows = [(sign, leaf) for sign, leaf in terms if not (isinstance(leaf, Var) and leaf.name == "kv_idx")]
    if kv == -1:    # a - b = R - kv: a op b <=> R op kv
        out = Binary(e.op, _sum(rows), Var("kv_idx", INT), BOOL)
    elif kv == 1:   # a - b = R + kv: a op b <=> -R op kv, flipped
        out = Binary(FLIP[e.op], _sum([(-s, leaf) for s, leaf in rows]), Var("kv_idx", INT), BOOL)
    else:
        return None
    return None if out == Binary(e.op, e.a, e.b, BOOL) else out


def separate(e: Expr) -> Expr:
    """`e` with its integer index comparisons in the form `rows op kv_idx` (module docstring)."""
    def go(n: Expr) -> Expr:
        n = with_children(n, tuple(go(k) for k in children(n)))
        if isinstance(n, Binary) and n.op in CMP_OPS and n.a.dtype == INT and n.b.dtype == INT:
            return _separated(n) or n
        return n
    return go(e)


def _reads(e: Expr) -> set[str]:
    return {n.name for n in walk(e) if isinstance(n, Var)}


def hoist_rows(e: Expr) -> tuple[Expr, list[tuple[str, Expr]]]:
    """(e with its largest row-only subexpressions replaced by variables `__row<i>`, [(name,
    subexpression)]): those read q_idx and nothing beyond q_idx, b and h, and are more than q_idx."""
    found: dict[Expr, str] = {}

    def go(n: Expr) -> Expr:
        reads = _reads(n)
        if "q_idx" in reads and reads <= ROWS and not isinstance(n, Var):
            name = found.setdefault(n, f"__row{len(found)}")
            return Var(name, n.dtype)
        return with_children(n, tuple(go(k) for k in children(n)))

    out = go(e)
    return out, [(name, sub) for sub, name in found.items()]
