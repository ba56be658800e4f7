"""Python-snippet front end: FlexAttention-style `score_mod`/`mask_mod` callables -> Program.

The callables are run once with `Proxy` values for (score, b, h, q_idx, kv_idx). Proxies record IR
through Python operators and `__torch_function__`; captured tensors indexed by proxies become named
parameters. Python control flow on a proxy raises DSLError at the user's own line.
"""
from __future__ import annotations

import linecache
import os
import re
import sys

import torch

from ..ir.errors import DSLError, Span
from ..ir.expr import (BOOL, FLOAT, INT, Const, Expr, Load, Var, binary, call, cast, clamp, const,
                       unary, where)
from ..ir.program import Param, Program

_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TORCH = os.path.dirname(os.path.abspath(torch.__file__))
RESERVED = {"attention", "const", "let", "score", "mask", "select", "branch", "normalize", "out",
            "on", "b", "h", "q_idx", "kv_idx", "inf", "pi", "true", "false"}
TORCH_DTYPES = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32",
                torch.float64: "f64", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32",
                torch.int64: "i64", torch.uint8: "u8", torch.bool: "bool"}
SCALAR_OF_TORCH = {torch.bool: BOOL, **{d: FLOAT for d in (torch.float16, torch.bfloat16,
                   torch.float32, torch.float64)}}
TORCH_OF_SCALAR = {BOOL: torch.bool, INT: torch.int32, FLOAT: torch.float32}
# torch function name -> IR: ("call", fn) | ("binary", op) | ("unary", op)
TORCH_FUNCS = {
    **{f: ("call", f) for f in ("exp", "exp2", "log", "log2", "sqrt", "rsqrt", "tanh", "sigmoid",
                                "sin", "cos", "abs", "sign", "floor", "ceil")},
    "absolute": ("call", "abs"), "special_expit": ("call", "sigmoid"), "expit": ("call", "sigmoid"),
    "add": ("binary", "add"), "sub": ("binary", "sub"), "subtract": ("binary", "sub"),
    "mul": ("binary", "mul"), "multiply": ("binary", "mul"), "true_divide": ("binary", "truediv"),
    "floor_divide": ("binary", "floordiv"), "remainder": ("binary", "mod"), "pow": ("binary", "pow"),
    "minimum": ("binary", "min"), "maximum": ("binary", "max"), "fmin": ("binary", "min"),
    "fmax": ("binary", "max"), "eq": ("binary", "eq"), "ne": ("binary", "ne"),
    "lt": ("binary", "lt"), "le": ("binary", "le"), "gt": ("binary", "gt"), "ge": ("binary", "ge"),
    "greater": ("binary", "gt"), "less": ("binary", "lt"), "greater_equal": ("binary", "ge"),
    "less_equal": ("binary", "le"), "not_equal": ("binary", "ne"),
    "logical_and": ("logic", "and"), "logical_or": ("logic", "or"), "logical_xor": ("logic", "xor"),
    "bitwise_and": ("binary", "and"), "bitwise_or": ("binary", "or"), "bitwise_xor": ("binary", "xor"),
    "bitwise_left_shift": ("binary", "lshift"), "bitwise_right_shift": ("binary", "rshift"),
    "and": ("binary", "and"), "or": ("binary", "or"), "xor": ("binary", "xor"),
    "lshift": ("binary", "lshift"), "rshift": ("binary", "rshift"), "truediv": ("binary", "truediv"),
    "floordiv": ("binary", "floordiv"), "mod": ("binary", "mod"), "matmul": None,
    "neg": ("unary", "neg"), "negative": ("unary", "neg"), "invert": ("unary", "not"),
    "bitwise_not": ("unary", "not"), "logical_not": ("lnot", None), "square": ("square", None),
    "relu": ("relu", None), "clamp": ("clamp", None), "clip": ("clamp", None),
    "clamp_min": ("clamp_min", None), "clamp_max": ("clamp_max", None), "where": ("where", None),
    "div": ("div", None), "divide": ("div", None), "min": ("minmax", "min"), "max": ("minmax", "max"),
}


def user_span() -> Span | None:
    """The innermost frame outside attnforge and torch: where the user wrote the operation."""
    f = sys._getframe(1)
    while f is not None:
        fname = os.path.abspath(f.f_code.co_filename)
        if not (fname.startswith(_HERE) or fname.startswith(_TORCH)):
            return _frame_span(f)
        f = f.f_back
    return None


def _frame_span(f) -> Span:
    line, col, end_col = f.f_lineno, 1, 2
    try:
        pos = list(f.f_code.co_positions())[f.f_lasti // 2]
        if pos[0] is not None and pos[2] is not None:
            line, col = pos[0], pos[2] + 1
            end_col = pos[3] + 1 if pos[1] == pos[0] and pos[3] is not None else col + 1
    except (AttributeError, IndexError):
        pass
    text = linecache.getline(f.f_code.co_filename, line).rstrip("\n")
    return Span(f.f_code.co_filename, line, col, end_col, text)


class _Tracer:
    """Per-trace state: captured tensors and their names."""

    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.params: dict[str, Param] = {}
        self.by_id: dict[int, str] = {}

    def param_for(self, t: torch.Tensor, span: Span | None) -> Param:
        if id(t) in self.by_id:
            return self.params[self.by_id[id(t)]]
        if t.dtype not in TORCH_DTYPES:
            raise DSLError(f"captured tensor of dtype {t.dtype} is not supported", span,
                           "use a float, int or bool tensor")
        name = self._unique(_name_of(t) or "tensor")
        self.by_id[id(t)] = name
        self.tensors[name] = t
        self.params[name] = Param(name, TORCH_DTYPES[t.dtype], tuple(t.shape))
        return self.params[name]

    def _unique(self, base: str) -> str:
        base = re.sub(r"\W", "_", base)
        if base in RESERVED or not re.match(r"[A-Za-z_]", base):
            base = f"{base}_t"
        name, k = base, 1
        while name in self.params:
            name, k = f"{base}_{k}", k + 1
        return name


_ACTIVE: list[_Tracer] = []


def _name_of(t: torch.Tensor) -> str | None:
    f = sys._getframe(1)
    while f is not None:
        fname = os.path.abspath(f.f_code.co_filename)
        if not (fname.startswith(_HERE) or fname.startswith(_TORCH)):
            for scope in (f.f_locals, f.f_globals):
                for k, v in scope.items():
                    if v is t and not k.startswith("__"):
                        return k
        f = f.f_back
    return None


class TensorView:
    """A captured tensor indexed by fewer subscripts than its rank (`intervals[i]` before `[0]`)."""

    def __init__(self, param: Param, index: tuple[Expr, ...]):
        self.param, self.index = param, index

    def __getitem__(self, idx):
        return _index(self.param, self.index, idx, user_span())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self._partial()

    def _partial(self, *_):
        raise DSLError(f"`{self.param.name}` is indexed with {len(self.index)} of "
                       f"{len(self.param.shape)} subscripts", user_span(),
                       "index every dimension before using the value")

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = _partial
    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = __and__ = __or__ = _partial
    __hash__ = object.__hash__


def _index(param: Param, prefix: tuple[Expr, ...], idx, span) -> "Proxy | TensorView":
    items = idx if isinstance(idx, tuple) else (idx,)
    if any(i is Ellipsis or isinstance(i, slice) or i is None for i in items):
        raise DSLError(f"slices, `...` and None are not supported when indexing `{param.name}`",
                       span, "index with integers or traced index expressions, or slice outside "
                       "the mod")
    exprs = prefix + tuple(_as_expr(i, span) for i in items)
    for e in exprs:
        if e.dtype == FLOAT:
            raise DSLError(f"index of `{param.name}` must be an integer, got float", span,
                           "use `//` or `.long()`")
    exprs = tuple(cast(e, INT, span) if e.dtype == BOOL else e for e in exprs)
    if len(exprs) > len(param.shape):
        raise DSLError(f"`{param.name}` has {len(param.shape)} dimension(s) but got {len(exprs)} "
                       "subscripts", span, "remove the extra subscripts")
    if len(exprs) < len(param.shape):
        return TensorView(param, exprs)
    return Proxy(Load(param.name, exprs, param.scalar, span))


def _as_expr(x, span) -> Expr:
    if isinstance(x, Proxy):
        return x.expr
    if isinstance(x, TensorView):
        x._partial()
    if isinstance(x, torch.Tensor):
        if x.dim() != 0:
            raise DSLError(f"a captured tensor of shape {tuple(x.shape)} is used as a value",
                           span, "index it with the traced indices, e.g. `bias[h, q_idx]`")
        p = _ACTIVE[-1].param_for(x, span)
        return Load(p.name, (), p.scalar, span)
    if isinstance(x, (bool, int, float)):
        return const(x, span)
    raise DSLError(f"unsupported value of type {type(x).__name__} in a mod", span,
                   "use Python numbers, captured tensors or the traced arguments")


def _p(e: Expr) -> "Proxy":
    return Proxy(e)


def _bin(op):
    def fwd(self, other):
        span = user_span()
        return _p(binary(op, self.expr, _as_expr(other, span), span))

    def rev(self, other):
        span = user_span()
        return _p(binary(op, _as_expr(other, span), self.expr, span))

    return fwd, rev


class Proxy:
    """A traced scalar standing for a whole tensor of scores or indices."""

    __slots__ = ("expr",)

    def __init__(self, expr: Expr):
        self.expr = expr

    __hash__ = object.__hash__
    __add__, __radd__ = _bin("add")
    __sub__, __rsub__ = _bin("sub")
    __mul__, __rmul__ = _bin("mul")
    __truediv__, __rtruediv__ = _bin("truediv")
    __floordiv__, __rfloordiv__ = _bin("floordiv")
    __mod__, __rmod__ = _bin("mod")
    __pow__, __rpow__ = _bin("pow")
    __and__, __rand__ = _bin("and")
    __or__, __ror__ = _bin("or")
    __xor__, __rxor__ = _bin("xor")
    __lshift__, __rlshift__ = _bin("lshift")
    __rshift__, __rrshift__ = _bin("rshift")
    __lt__, __gt__ = _bin("lt")[0], _bin("gt")[0]
    __le__, __ge__ = _bin("le")[0], _bin("ge")[0]
    __eq__, __ne__ = _bin("eq")[0], _bin("ne")[0]

    def __neg__(self):
        return _p(unary("neg", self.expr, user_span()))

    def __pos__(self):
        return self

    def __invert__(self):
        return _p(unary("not", self.expr, user_span()))

    def __abs__(self):
        return _p(call("abs", self.expr, user_span()))

    def __floor__(self):
        return _p(call("floor", self.expr, user_span()))

    def __ceil__(self):
        return _p(call("ceil", self.expr, user_span()))

    def __bool__(self):
        raise DSLError("a traced value is used in Python control flow (`if`, `and`, `or`, `not`, "
                       "`bool()`)", user_span(),
                       "use `&`, `|`, `~` or `torch.where(cond, a, b)` instead")

    def _not_int(self, *_):
        raise DSLError("a traced value is converted to a Python number (`int()`, `float()`, "
                       "`range()`, list indexing)", user_span(),
                       "keep it a tensor expression; index captured tensors directly")

    __int__ = __index__ = __float__ = _not_int

    def __iter__(self):
        raise DSLError("a traced value cannot be iterated", user_span(),
                       "loop over Python constants instead")

    def __getitem__(self, idx):
        raise DSLError("a traced index or score cannot be subscripted", user_span(),
                       "subscript the captured tensor instead, e.g. `bias[q_idx]`")

    # tensor-like attributes used by FlexAttention mods
    @property
    def dtype(self):
        return TORCH_OF_SCALAR[self.expr.dtype]

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def shape(self):
        return torch.Size([])

    def dim(self):
        return 0

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in TORCH_FUNCS and TORCH_FUNCS[name] is not None:
            return lambda *a, **k: _torch_call(name, (self, *a), k, user_span())
        raise DSLError(f"unsupported: Tensor.{name} in a mod", user_span(),
                       "supported: " + ", ".join(sorted(k for k, v in TORCH_FUNCS.items() if v)))

    def to(self, *args, dtype=None, **_):
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
        return self if dtype is None else self._cast(dtype)

    def _cast(self, dtype: torch.dtype) -> "Proxy":
        kind = SCALAR_OF_TORCH.get(dtype, INT)
        return _p(cast(self.expr, kind, user_span()))

    def float(self):
        return self._cast(torch.float32)

    def double(self):
        return self._cast(torch.float64)

    def half(self):
        return self._cast(torch.float16)

    def bfloat16(self):
        return self._cast(torch.bfloat16)

    def int(self):
        return self._cast(torch.int32)

    def long(self):
        return self._cast(torch.int64)

    def bool(self):
        return self._cast(torch.bool)

    def type_as(self, other):
        return self._cast(other.dtype)

    def _new(self, value, dtype):
        dtype = dtype or self.dtype
        kind = SCALAR_OF_TORCH.get(dtype, INT)
        return _p(const({BOOL: bool, INT: int, FLOAT: float}[kind](value), user_span()))

    def new_ones(self, *size, dtype=None, **_):
        return self._new(1, dtype)

    def new_zeros(self, *size, dtype=None, **_):
        return self._new(0, dtype)

    def new_full(self, size, fill_value, *, dtype=None, **_):
        return self._new(fill_value, dtype)

    def new_tensor(self, data, dtype=None, **_):
        return self._new(data, dtype)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        span = user_span()
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "__getitem__" and isinstance(args[0], torch.Tensor):
            return _index(_ACTIVE[-1].param_for(args[0], span), (), args[1], span)
        if name.startswith("__r") and name.endswith("__") and name[3:-2] in TORCH_FUNCS:
            return _torch_call(name[3:-2], (args[1], args[0]), kwargs, span)
        return _torch_call(name.strip("_"), args, kwargs, span)


def _torch_call(name: str, args, kwargs, span) -> Proxy:
    entry = TORCH_FUNCS.get(name)
    if entry is None:
        raise DSLError(f"unsupported: torch.{name} in a mod", span,
                       "supported: " + ", ".join(sorted(k for k, v in TORCH_FUNCS.items() if v)))
    kind, op = entry
    e = [_as_expr(a, span) for a in args if not isinstance(a, (torch.dtype, str, type(None)))]
    if kind == "call":
        return _p(call(op, e[0], span))
    if kind == "binary":
        return _p(binary(op, e[0], e[1], span))
    if kind == "logic":
        return _p(binary(op, cast(e[0], BOOL, span), cast(e[1], BOOL, span), span))
    if kind == "unary":
        return _p(unary(op, e[0], span))
    if kind == "lnot":
        return _p(unary("not", cast(e[0], BOOL, span), span))
    if kind == "square":
        return _p(binary("mul", e[0], e[0], span))
    if kind == "relu":
        return _p(binary("max", e[0], const(0 if e[0].dtype != FLOAT else 0.0), span))
    if kind == "where":
        if len(e) != 3:
            raise DSLError("torch.where needs (cond, a, b) in a mod", span, "pass all three")
        return _p(where(cast(e[0], BOOL, span), e[1], e[2], span))
    if kind == "div":
        mode = kwargs.get("rounding_mode")
        if mode == "floor":
            return _p(binary("floordiv", e[0], e[1], span))
        if mode == "trunc":
            q = binary("truediv", e[0], e[1], span)
            t = where(binary("lt", q, const(0.0), span), call("ceil", q, span), call("floor", q, span))
            return _p(cast(t, INT, span) if FLOAT not in (e[0].dtype, e[1].dtype) else t)
        return _p(binary("truediv", e[0], e[1], span))
    if kind == "minmax":
        if len(e) != 2:
            raise DSLError(f"torch.{name} over a dimension is not supported in a mod", span,
                           f"use torch.{name}imum(a, b)")
        return _p(binary(op, e[0], e[1], span))
    lo, hi = (e + [None, None])[1:3] if kind == "clamp" else (None, None)
    lo = _as_expr(kwargs["min"], span) if kwargs.get("min") is not None else lo
    hi = _as_expr(kwargs["max"], span) if kwargs.get("max") is not None else hi
    if kind == "clamp_min":
        lo = e[1] if len(e) > 1 else lo
    if kind == "clamp_max":
        hi = e[1] if len(e) > 1 else hi
    return _p(clamp(e[0], lo, hi, span))


def _fn_span(fn) -> Span | None:
    code = getattr(fn, "__code__", None)
    if code is None:
        return None
    text = linecache.getline(code.co_filename, code.co_firstlineno).rstrip("\n")
    col = len(text) - len(text.lstrip()) + 1
    return Span(code.co_filename, code.co_firstlineno, col, len(text) + 1, text)


def _result(value, fn, what: str) -> Expr:
    span = _fn_span(fn)
    if isinstance(value, TensorView):
        value._partial()
    if isinstance(value, (Proxy, bool, int, float)) or isinstance(value, torch.Tensor):
        return _as_expr(value, span)
    raise DSLError(f"{what} returned {type(value).__name__}, expected a tensor expression", span,
                   "return the traced expression")


def trace(score_mod=None, mask_mod=None, name: str | None = None):
    """Trace FlexAttention-style mods. Returns (Program, {param name: captured tensor})."""
    tracer = _Tracer()
    _ACTIVE.append(tracer)
    try:
        b, h, q, kv = (Proxy(Var(n, INT)) for n in ("b", "h", "q_idx", "kv_idx"))
        score = Var("score", FLOAT)
        mask = None
        if score_mod is not None:
            score = _result(score_mod(Proxy(score), b, h, q, kv), score_mod, "score_mod")
            if score.dtype == BOOL:
                raise DSLError("score_mod returned a bool", _fn_span(score_mod),
                               "return a score; masks belong in mask_mod")
            score = cast(score, FLOAT)
        if mask_mod is not None:
            mask = _result(mask_mod(b, h, q, kv), mask_mod, "mask_mod")
            if mask.dtype != BOOL:
                raise DSLError(f"mask_mod returned {mask.dtype}, expected bool", _fn_span(mask_mod),
                               "return a comparison such as `q_idx >= kv_idx`")
            if isinstance(mask, Const) and mask.value is True:
                mask = None
    except DSLError:
        raise
    except Exception as err:  # noqa: BLE001 - the boundary: report at the user's line
        if os.environ.get("ATTN_DEBUG_FRONTEND") == "1":
            raise
        tb = err.__traceback__
        span = None
        while tb is not None:
            fname = os.path.abspath(tb.tb_frame.f_code.co_filename)
            if not (fname.startswith(_HERE) or fname.startswith(_TORCH)):
                span = _frame_span(tb.tb_frame)
            tb = tb.tb_next
        raise DSLError(f"{type(err).__name__} while tracing: {err}", span,
                       "mods may use Python numbers, captured tensors and torch ops on the "
                       "traced arguments") from None
    finally:
        _ACTIVE.pop()
    names = [getattr(f, "__name__", "") for f in (score_mod, mask_mod) if f is not None]
    base = name or "_".join(n for n in names if n and n != "<lambda>") or "variant"
    base = re.sub(r"\W", "_", base)
    prog = Program.flex_like(base if re.match(r"[A-Za-z_]", base) else f"v_{base}",
                             tracer.params.values(), (), score, mask)
    return prog, dict(tracer.tensors)
