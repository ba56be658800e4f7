"""IR expressions -> Triton source lines.

A `Renderer` maps the IR's variables to names in the kernel (`score` -> `qk`, `q_idx` -> `o_m[:, None]`
...), emits one assignment per expression node that is used more than once (so generated code reads
like hand-written code and shared subexpressions are computed once), and renders captured-tensor
reads as masked loads. Python semantics are kept: `//` and `%` floor toward -inf (Triton's truncate)
unless both operands are provably non-negative; `&`, `|`, `~` are logical on bool, bitwise on int.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..ir.expr import (BOOL, FLOAT, INT, SYMBOL, Binary, Call, Cast, Const, Expr, Load, Unary, Var, Where,
                       children, rewrite, walk)
from ..ir.printer import format_const

TL_FUNCS = {"exp": "tl.exp", "exp2": "tl.exp2", "log": "tl.log", "log2": "tl.log2",
            "sqrt": "tl.sqrt", "rsqrt": "tl.rsqrt", "sigmoid": "tl.sigmoid", "sin": "tl.sin",
            "cos": "tl.cos", "abs": "tl.abs", "floor": "tl.floor", "ceil": "tl.ceil",
            "tanh": "_tanh", "sign": "_sign"}
TL_TYPES = {FLOAT: "tl.float32", INT: "tl.int32", BOOL: "tl.int1"}
# operators whose Triton spelling means what the IR means (division, modulo and pow do not)
SIMPLE_OPS = {op: sym for op, sym in SYMBOL.items() if op not in ("truediv", "floordiv", "mod", "pow")}


@dataclass
class Axis:
    """How an index variable appears in a kernel: its Triton expression and its valid-mask (None: reads
    indexed by it are not masked)."""

    code: str
    valid: str | None = None


# an axes entry (no index variable's name) giving a tile's q_idx - kv_idx where a kernel has it at
# hand (bwd_diag: one tile of distances for every step of a band, so the table read leaves the loop)
DISTANCE = "q_idx - kv_idx"


@dataclass
class Renderer:
    """`axes` maps q_idx / kv_idx to tile vectors, `scalars` maps b, h, score and others to names."""

    axes: dict[str, Axis]
    scalars: dict[str, str]
    prefix: str = "t"
    tables: dict = field(default_factory=dict)  # Load -> its distance table's number (`table_name`)
    lines: list[str] = field(default_factory=list)
    names: dict[Expr, str] = field(default_factory=dict)

    def count(self, *exprs: Expr) -> None:
        """Count uses of every subexpression over `exprs`, which are then rendered in order by this
        renderer: a subexpression the later ones use again gets a name where it is first computed."""
        uses: dict[Expr, int] = {}
        # per distinct parent: a node under a repeated subexpression is used once, by its one name
        parents = {n: None for e in map(_float_literals, exprs) for n in walk(e)}
        for n in parents:
            for k in children(n):
                uses[k] = uses.get(k, 0) + 1
        self._uses = uses

    def render(self, e: Expr, target: str | None = None) -> str:
        """Emit the statements computing `e`; returns the expression naming its value."""
        if not hasattr(self, "_uses"):
            self.count(e)
        code = self._expr(_float_literals(e))
        if target is not None:
            self.lines.append(f"{target} = {code}")
            return target
        return code

    def _expr(self, e: Expr) -> str:
        if e in self.names:
            return self.names[e]
        code = self._code(e)
        if isinstance(e, Load):
            # captured-tensor reads get their own line: b_c_<tensor>, then b_c<k>_<tensor> (no other
            # tensor's name: identifiers do not start with a digit)
            taken = sum(1 for n in self.names if isinstance(n, Load) and n.param == e.param)
            name = f"b_{captured(e.param)}" if not taken else f"b_c{taken}_{e.param}"
            self.lines.append(f"{name} = {code}")
            self.names[e] = name
            return name
        if self._uses.get(e, 0) > 1 and not isinstance(e, (Const, Var)):
            name = f"{self.prefix}{len(self.names)}"
            self.lines.append(f"{name} = {code}")
            self.names[e] = name
            return name
        return code

    def _code(self, e: Expr) -> str:
        match e:
            case Const(value=v, dtype=t):
                if t == BOOL:
                    return "True" if v else "False"
                text = format_const(v)
                return "float('-inf')" if text == "(-inf)" else "float('inf')" if text == "inf" \
                    else text
            case Var(name=n) if n in self.axes:
                return self.axes[n].code
            case Var(name=n):
                return self.scalars[n]
            case Load():
                return self._load(e)
            case Unary(op="neg", x=x):
                return f"-{self._wrap(x)}"
            case Unary(op="not", x=x):
                return f"~{self._wrap(x)}"
            case Call(fn=fn, x=x):
                if fn not in ("abs", "sign", "floor", "ceil") and x.dtype != FLOAT:
                    return f"{TL_FUNCS[fn]}({self._as_float(x)})"
                return f"{TL_FUNCS[fn]}({self._expr(x)})"
            case Cast(x=x, dtype=t):
                if t == FLOAT:
                    return self._as_float(x)
                return f"({self._expr(x)} != 0)" if t == BOOL else f"({self._expr(x)}).to({TL_TYPES[t]})"
            case Where(cond=c, a=a, b=b):
                return f"tl.where({self._expr(c)}, {self._expr(a)}, {self._expr(b)})"
            case Binary(op=op, a=a, b=b):
                return self._binary(op, a, b, e)
        raise NotImplementedError(f"cannot render {type(e).__name__} in a kernel")

    def _wrap(self, e: Expr) -> str:
        code = self._expr(e)
        return code if _atomic(code) else f"({code})"

    def _as_float(self, e: Expr) -> str:
        """`e` as float32. A sum or difference of indices and integer literals converts its terms (tile
        vectors and scalars) and adds them as floats, rather than converting the [rows, cols] integer
        result: a conversion per score runs on the special-function unit, as exp2 does (ALiBi's
        `(kv_idx - q_idx) * slope` took one per score). Exact while the terms and the result stay
        below 2^24 in magnitude (sequences and literals under 2^23)."""
        if self._axis_sum(e):
            return f"({self._float_sum(e)})"
        if isinstance(e, Const) and e.dtype == INT:
            return f"{float(e.value)!r}"
        code = self._wrap(e)
        return code if e.dtype == FLOAT else f"{code}.to(tl.float32)"

    def _axis_sum(self, e: Expr) -> bool:
        """An integer index sum (`_index_sum`) that reads a tile axis (q_idx or kv_idx)."""
        return e.dtype == INT and _index_sum(e) and any(isinstance(n, Var) and n.name in self.axes for n in walk(e))

    def _float_sum(self, e: Expr) -> str:
        match e:
            case Const(value=v):
                return f"{float(v)!r}"
            case Var():
                return f"{self._expr(e)}.to(tl.float32)"
            case Unary(op="neg", x=x):
                return f"-({self._float_sum(x)})"
            case Binary(op=op, a=a, b=b):
                return f"{self._float_sum(a)} - ({self._float_sum(b)})" if op == "sub" \
                    else f"{self._float_sum(a)} + {self._float_sum(b)}"
        raise NotImplementedError(type(e).__name__)

    def _binary(self, op: str, a: Expr, b: Expr, e: Expr) -> str:
        # an index sum meeting a float: converted term by term (`_as_float`); other integers are
        # promoted by Triton as they are (a scalar may be a Python int in a kernel's static loop)
        x, y = (f"({self._float_sum(o)})" if e.dtype == FLOAT and self._axis_sum(o) else self._wrap(o)
                for o in (a, b))
        if op in SIMPLE_OPS:
            return f"{x} {SIMPLE_OPS[op]} {y}"
        if op == "truediv":
            if isinstance(b, Const) and b.dtype == FLOAT and b.value != 0 and abs(b.value) != float("inf"):
                # by a literal: a multiply by its reciprocal (Triton's fp32 `/` is itself approximate)
                return f"{x} * {format_const(1.0 / b.value)}"
            if isinstance(a, Const):
                x = f"({float(a.value)!r})"
            elif a.dtype != FLOAT:
                x = f"{x}.to(tl.float32)"
            return f"{x} / {y}"
        if op in ("min", "max"):
            return f"tl.{op}imum({x}, {y})"
        if op in ("floordiv", "mod"):
            if e.dtype == FLOAT:
                return f"tl.floor({x} / {y})" if op == "floordiv" else f"{x} - {y} * tl.floor({x} / {y})"
            if nonneg(a) and nonneg(b):
                return f"{x} // {y}" if op == "floordiv" else f"{x} % {y}"
            return f"_floordiv({x}, {y})" if op == "floordiv" else f"_floormod({x}, {y})"
        if op == "pow":
            if isinstance(b, Const) and b.dtype == INT and 0 <= b.value <= 8:
                return " * ".join([x] * b.value) if b.value else "1"
            return f"_pow({x}, {y})"
        raise NotImplementedError(op)

    def _load(self, e: Load) -> str:
        if e in self.tables:
            # its distance table (runtime/tables.py), indexed by q_idx - kv_idx: in bounds for every
            # tile row and column (padded), no clamp, no mask; read by `_ld_nc` (common.py.jinja)
            t = table_name(self.tables[e], e)
            distance = self.axes.get(DISTANCE) or Axis(f"({self.axes['q_idx'].code} - {self.axes['kv_idx'].code})")
            code = f"_ld_nc(p_{t} + {self.scalars['b']} * s_{t}_0 + {self.scalars['h']} * s_{t}_1 + {distance.code})"
            return self._typed(code, e)
        return self._typed(self._clamped_load(e), e)

    def _typed(self, code: str, e: Load) -> str:
        if e.dtype == FLOAT:
            return f"{code}.to(tl.float32)"
        return f"({code} != 0)" if e.dtype == BOOL else f"{code}.to(tl.int32)"

    def _clamped_load(self, e: Load) -> str:
        c = captured(e.param)
        # indices are clamped into the tensor (never empty: `validate`): an out-of-range read is never a
        # memory fault. Axes with a valid-mask mask the read too (padding rows and columns read nothing)
        offset = " + ".join(
            f"tl.minimum(tl.maximum({self._expr(i)}, 0), n_{c}_{d} - 1).to(tl.int64) * s_{c}_{d}"
            for d, i in enumerate(e.index)) or "0"
        axes = _axes_of(e, self.axes)
        masks = [self.axes[a].valid for a in sorted(axes) if self.axes[a].valid]
        if len(axes) == 2:  # a read per score (bias[h, q_idx, kv_idx]): `_ld_nc` (common.py.jinja)
            ptrs = f"p_{c} + {offset}"
            return f"_ld_nc_masked({ptrs}, {' & '.join(masks)})" if masks else f"_ld_nc({ptrs})"
        mask = f", mask={' & '.join(masks)}, other=0" if masks else ""
        return f"tl.load(p_{c} + {offset}{mask})"


_PROMOTING = ("add", "sub", "mul", "truediv", "min", "max")


def _float_literals(e: Expr) -> Expr:
    """Integer literals that meet a float in arithmetic become float literals (as Triton promotes
    them; exact under 2^24), so `score / 30` (sympy's derivative) and `score / 30.0` (as written)
    are one subexpression, computed once."""
    def fn(n: Expr) -> Expr | None:
        if isinstance(n, Binary) and n.dtype == FLOAT and n.op in _PROMOTING:
            a, b = (Const(float(o.value), FLOAT) if isinstance(o, Const) and o.dtype == INT and abs(o.value) < 2 ** 24
                    else o for o in (n.a, n.b))
            if (a, b) != (n.a, n.b):
                return Binary(n.op, a, b, FLOAT)
        return None
    return rewrite(e, fn)


def _atomic(code: str) -> bool:
    """No operator at bracket depth 0: a name, literal, subscript or call."""
    if code.startswith(("-", "~")):
        return False
    depth = 0
    for ch in code:
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch == " ":
            return False
    return True


def _axes_of(e: Expr, axes: dict[str, Axis]) -> set[str]:
    return {n.name for n in walk(e) if isinstance(n, Var) and n.name in axes}


def _index_sum(e: Expr) -> bool:
    """Integer sums and differences of variables (indices, batch, head) and literals under 2^23."""
    match e:
        case Const(value=v, dtype=t):
            return t == INT and abs(v) < 2 ** 23
        case Var(dtype=t):
            return t == INT
        case Unary(op="neg", x=x):
            return _index_sum(x)
        case Binary(op="add" | "sub", a=a, b=b):
            return _index_sum(a) and _index_sum(b)
    return False


def nonneg(e: Expr) -> bool:
    """Provably >= 0 (indices, non-negative literals and closed combinations of them)."""
    match e:
        case Const(value=v):
            return v >= 0
        case Var(name=n):
            return n in ("b", "h", "q_idx", "kv_idx")
        case Binary(op="add" | "mul" | "floordiv" | "mod" | "min" | "max", a=a, b=b):
            return nonneg(a) and nonneg(b)
        case Call(fn="abs"):
            return True
    return False


def captured(param: str) -> str:
    """A captured tensor's name in kernels (p_<it> its pointer, s_<it>_<d> and n_<it>_<d> its strides
    and sizes, b_<it> a value read): `c_<name>`, which no template name starts with, so a tensor called
    `delta` or `q` cannot rebind the kernels' own `p_delta` or `b_q`."""
    return f"c_{param}"


def table_name(j: int, load: Load) -> str:
    """Kernel-argument name of distance table j, of `load` (p_<name>, s_<name>_0 ...): no captured
    tensor's (a double underscore)."""
    return f"dist{j}__{load.param}"


def render_block(e: Expr, target: str, axes: dict[str, Axis], scalars: dict[str, str],
                 prefix: str = "t", indent: str = "", tables: dict | None = None) -> str:
    """Statements assigning `e` to `target`, indented for a template."""
    return render_blocks([(e, target)], axes, scalars, prefix, indent, tables)[0]


def render_blocks(items: list[tuple[Expr, str]], axes: dict[str, Axis], scalars: dict[str, str],
                  prefix: str = "t", indent: str = "", tables: dict | None = None) -> list[str]:
    """One block per (expression, target), for a template that places them in this order in one
    scope: a later block reuses what an earlier one computed (softcap's `tanh(score / 30)` is
    computed once for the score and its derivative), so nothing between them may rebind `prefix`
    names."""
    r = Renderer(axes, scalars, prefix, tables=tables or {})
    r.count(*(e for e, _ in items))
    blocks = []
    for e, target in items:
        start = len(r.lines)
        r.render(e, target)
        blocks.append("\n".join(indent + line if i else line for i, line in enumerate(r.lines[start:])))
    return blocks


def loaded_params(*exprs: Expr) -> list[str]:
    """Names of captured tensors read by the expressions, in first-use order."""
    seen: dict[str, None] = {}
    for e in exprs:
        for n in walk(e):
            if isinstance(n, Load):
                seen.setdefault(n.param, None)
    return list(seen)
