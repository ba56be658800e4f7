"""DSL text -> Program. Parsed with lark (LALR, positions kept); never evaluated.

`let` bindings are inlined, so the IR holds one expression per selection/branch and
`parse(print_program(p)) == p`.
"""
from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass, replace
from functools import cache

import lark
from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from .._cachedir import cache_dir
from ..ir.errors import DSLError, Span
from ..ir.verify import verify
from ..ir.expr import (BOOL, FLOAT, FUNCS, INT, SYMBOL, Binary, Const, Expr, Load, Var, binary, call, cast,
                       clamp, unary, where)
from ..ir.program import (FEATURE_MAPS, INDEX_VARS, NORMALIZERS, TENSOR_DTYPES, Combiner, ConstDecl,
                          LinearBranch, Param, PooledBranch, Program, SelRef, SoftmaxBranch,
                          StaticSelect, TopKSelect)

OPS = {sym: op for op, sym in SYMBOL.items()} | {"@": "matmul"}
SCALAR_DECL = {"int": INT, "float": FLOAT, "bool": BOOL}
CASTS = {"float": FLOAT, "int": INT, "bool": BOOL}
NAMED_CONSTS = {"inf": math.inf, "pi": math.pi, "true": True, "false": False}
BRACKETS = {"(": ")", "[": "]", "{": "}"}

# Parse errors that deserve a labelled message: (message, fix, examples that produce them).
KNOWN_ERRORS = [
    ("comparisons cannot be chained", "write `(a < b) & (b < c)`",
     ["attention v() { mask = 1 < q_idx < 5 }", "attention v() { mask = q_idx == kv_idx == 1 }"]),
    ("`and`, `or`, `not` and `if` are not expressions here", "use `&`, `|`, `~` or `where(c, a, b)`",
     ["attention v() { mask = q_idx and kv_idx }", "attention v() { mask = q_idx or kv_idx }",
      "attention v() { mask = not q_idx }", "attention v() { score = score if b else score }"]),
    ("a statement needs `=`", "write e.g. `score = score + 1`",
     ["attention v() { score score }", "attention v() { mask q_idx }", "attention v() { let a }"]),
    ("unknown statement", "statements are const, let, score, mask, select, branch, normalize, out",
     ["attention v() { foo = 1 }", "attention v() { q_idx = 1 }"]),
]


@dataclass(frozen=True, slots=True)
class Symbol:
    """A bare name that is not an expression by itself (a keyword argument value like `q_block`)."""

    name: str
    span: Span


class _Postlex:
    """Drops newlines inside brackets so expressions may span lines."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type == "_NL":
                if depth == 0:
                    yield tok
                continue
            if tok.value in ("(", "["):
                depth += 1
            elif tok.value in (")", "]"):
                depth = max(0, depth - 1)
            yield tok


_LARK_LOCK = threading.Lock()


def lark_parser() -> Lark:
    """The parser, built once per process by whichever thread asks first (the start-up thread of
    `runtime/warmup.py`, usually); a caller arriving meanwhile waits for it."""
    with _LARK_LOCK:
        return _build_lark()


@cache
def _build_lark() -> Lark:
    # the LALR tables are cached on disk by lark (keyed by a hash of the grammar and options):
    # building them costs ~0.4 s of every new process's first compile
    try:
        cache_file = str(cache_dir() / f"lark_{lark.__version__}.cache")
        cache_dir().mkdir(parents=True, exist_ok=True)
    except OSError:
        cache_file = False
    return Lark.open("attention.lark", rel_to=__file__, parser="lalr", propagate_positions=True,
                     postlex=_Postlex(), maybe_placeholders=True, cache=cache_file)


class _Source:
    def __init__(self, text: str, file: str):
        self.text, self.file = text, file
        self.lines = text.splitlines() or [""]

    def span(self, line: int, col: int, end_col: int | None = None) -> Span:
        line = max(1, min(line, len(self.lines)))
        text = self.lines[line - 1]
        end = end_col if end_col is not None and end_col > col else col + 1
        return Span(self.file, line, col, end, text)

    def of(self, item) -> Span:
        if isinstance(item, Token):
            return self.span(item.line, item.column, item.end_column if item.end_line == item.line
                             else None)
        meta = item.meta if isinstance(item, Tree) else item
        end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
        return self.span(meta.line, meta.column, end)


def _check_brackets(src: _Source) -> None:
    stack: list[tuple[str, int, int]] = []
    for lineno, line in enumerate(src.lines, 1):
        for m in re.finditer(r"#.*|[()\[\]{}]", line):
            ch = m.group()
            if ch.startswith("#"):
                break
            if ch in BRACKETS:
                stack.append((ch, lineno, m.start() + 1))
            elif stack and BRACKETS[stack[-1][0]] == ch:
                stack.pop()
            elif any(BRACKETS[o] == ch for o, _, _ in stack):
                o, line, col = stack[-1]  # `(a]`: the innermost opener was left open
                raise DSLError(f"unclosed `{o}`", src.span(line, col), f"add a matching `{BRACKETS[o]}`")
            else:
                raise DSLError(f"unmatched `{ch}`", src.span(lineno, m.start() + 1),
                               "remove it or add the opening bracket")
    if stack:
        ch, lineno, col = stack[-1]
        raise DSLError(f"unclosed `{ch}`", src.span(lineno, col), f"add a matching `{BRACKETS[ch]}`")


@cache
def _example_errors() -> tuple:
    """(label, parser position, accepted terminals, token type) of each KNOWN_ERRORS example."""
    out = []
    for label, _, examples in KNOWN_ERRORS:
        for text in examples:
            for variant in (text, text.replace("{ ", "{\n  ")):
                try:
                    lark_parser().parse(variant)
                except UnexpectedInput as err:
                    out.append((label, *_error_key(err)))
    return tuple(out)


def _error_key(err: UnexpectedInput) -> tuple:
    # Like lark's match_examples, but keyed on the top parser state only, so leading newlines or
    # an enclosing context do not stop a known error from matching.
    state = getattr(err, "state", None)
    pos = getattr(state, "position", None)
    accepts = frozenset(getattr(err, "accepts", None) or getattr(err, "expected", None) or ())
    tok = getattr(err, "token", None)
    return pos, accepts, getattr(tok, "type", type(err).__name__)


def _label(err: UnexpectedInput) -> str | None:
    key = _error_key(err)
    for label, *known in _example_errors():
        if tuple(known) == key:
            return label
    for label, pos, _, tok in _example_errors():  # same place, other accepted set
        if (pos, tok) == key[0::2]:
            return label
    return None


def _terminal_text(name: str) -> str:
    try:
        pattern = lark_parser().get_terminal(name).pattern
    except KeyError:
        return name
    return f"`{pattern.value}`" if pattern.type == "str" else name.lower()


def _parse_error(err: UnexpectedInput, src: _Source) -> DSLError:
    label = _label(err)
    fix = {msg: fx for msg, fx, _ in KNOWN_ERRORS}.get(label)
    if isinstance(err, UnexpectedCharacters):
        ch = src.text[err.pos_in_stream] if err.pos_in_stream < len(src.text) else "?"
        return DSLError(label or f"unexpected character `{ch}`", src.span(err.line, err.column),
                        fix or "remove it")
    if isinstance(err, UnexpectedEOF) or (isinstance(err, UnexpectedToken) and err.token.type == "$END"):
        last = len(src.lines)
        return DSLError(label or "unexpected end of input", src.span(last, len(src.lines[-1]) + 1),
                        fix or "the variant must end with `}`")
    tok = err.token
    expected = sorted(_terminal_text(e) for e in getattr(err, "expected", ()) if not e.startswith("_"))
    shown = ", ".join(expected[:8]) + (" ..." if len(expected) > 8 else "")
    return DSLError(label or f"unexpected `{tok.value.strip() or tok.type}`", src.of(tok),
                    fix or f"expected one of: {shown}")


@v_args(tree=True)
class _Build(Transformer):
    def __init__(self, src: _Source, overrides: dict):
        super().__init__(visit_tokens=False)
        self.src, self.overrides = src, dict(overrides)
        self.params: dict[str, Param] = {}
        self.consts: dict[str, ConstDecl] = {}
        self.lets: dict[str, Expr] = {}
        self.score = self.mask = self.out = None
        self.normalizer = "softmax"
        self.selections, self.branches = [], []

    # -- helpers -----------------------------------------------------------------------------
    def sp(self, item) -> Span:
        return self.src.of(item)

    def expr(self, x) -> Expr:
        if isinstance(x, Symbol) and x.name in self.params:
            rank = len(self.params[x.name].shape)
            raise DSLError(f"`{x.name}` is a tensor of rank {rank}", x.span,
                           f"index it, e.g. `{x.name}[h]`")
        if isinstance(x, Symbol):
            known = sorted(set(INDEX_VARS) | {"score"} | set(self.consts) | set(self.lets)
                           | set(self.params))
            raise DSLError(f"unknown name `{x.name}`", x.span, "known names: " + ", ".join(known))
        if isinstance(x, tuple):
            raise DSLError("a list is not an expression here", None, "remove the brackets")
        return x

    # -- atoms -------------------------------------------------------------------------------
    def int_lit(self, t):
        return Const(int(t.children[0]), INT, self.sp(t))

    def hex_lit(self, t):
        return Const(int(t.children[0], 16), INT, self.sp(t))

    def float_lit(self, t):
        return Const(float(t.children[0]), FLOAT, self.sp(t))

    def list_lit(self, t):
        return tuple(c for c in t.children if c is not None)

    def name(self, t):
        tok = t.children[0]
        n, span = str(tok), self.sp(t)
        if n in self.lets:
            return self.lets[n]
        if n in ("b", "h", "q_idx", "kv_idx"):
            return Var(n, INT, span)
        if n == "score":
            return Var(n, FLOAT, span)
        if n in self.consts:
            return Var(n, self.consts[n].dtype, span)
        if n in NAMED_CONSTS:
            v = NAMED_CONSTS[n]
            return Const(v, BOOL if isinstance(v, bool) else FLOAT, span)
        if n in self.params and not self.params[n].shape:
            return Load(n, (), self.params[n].scalar, span)
        if any(br.name == n for br in self.branches):
            return Var(n, "vec", span)
        return Symbol(n, span)

    # -- operators ---------------------------------------------------------------------------
    def compare(self, t):
        a, op, b = t.children
        return binary(OPS[str(op)], self.expr(a), self.expr(b), self.sp(t))

    def _logic(self, t, op):
        a, b = t.children
        return binary(op, self.expr(a), self.expr(b), self.sp(t))

    def or_(self, t):
        return self._logic(t, "or")

    def xor(self, t):
        return self._logic(t, "xor")

    def and_(self, t):
        return self._logic(t, "and")

    def shift(self, t):
        a, op, b = t.children
        return binary(OPS[str(op)], self.expr(a), self.expr(b), self.sp(t))

    def arith(self, t):
        a, op, b = t.children
        if any(getattr(x, "dtype", None) == "vec" for x in (a, b)):
            a, b = (_vec_operand(x, self.params) or self.expr(x) for x in (a, b))
            return Binary(OPS[str(op)], a, b, "vec", self.sp(t))
        if str(op) == "@":
            raise DSLError("`@` combines branch outputs and parameters only", self.sp(t),
                           "use it in `out = branch @ param`")
        return binary(OPS[str(op)], self.expr(a), self.expr(b), self.sp(t))

    def pow(self, t):
        a, _, b = t.children
        return binary("pow", self.expr(a), self.expr(b), self.sp(t))

    def sign(self, t):
        op, x = t.children
        x = self.expr(x)
        if str(op) == "+":
            return x
        if isinstance(x, Const) and x.dtype != BOOL:
            return Const(-x.value, x.dtype, self.sp(t))
        return unary("neg", x, self.sp(t))

    def invert(self, t):
        x = self.expr(t.children[0])
        if isinstance(x, Const) and x.dtype == BOOL:
            return Const(not x.value, BOOL, self.sp(t))
        if isinstance(x, Const) and x.dtype == INT:
            return Const(~x.value, INT, self.sp(t))
        return unary("not", x, self.sp(t))

    def index(self, t):
        base, *idx = t.children
        span = self.sp(t)
        idx = tuple(self.expr(i) for i in idx)
        if isinstance(base, Load) and not base.index and base.param not in self.params:
            base = Symbol(base.param, span)
        if isinstance(base, Symbol) and base.name in self.params:
            return Load(base.name, idx, self.params[base.name].scalar, span)
        if isinstance(base, Load):
            # intervals[i][0]: a second subscript extends the first
            return Load(base.param, base.index + idx, base.dtype, span)
        if isinstance(base, Symbol):
            raise DSLError(f"unknown tensor `{base.name}`", base.span,
                           f"declare it as a parameter, e.g. `attention v({base.name}: f32[H])`")
        raise DSLError("only parameters can be indexed", span, "index a declared tensor parameter")

    def args(self, t):
        return [c for c in t.children if c is not None]

    def kwarg(self, t):
        key, value = t.children
        return (str(key), value)

    def call(self, t):
        fn_tok, args = t.children
        fn, span = str(fn_tok), self.sp(t)
        args = args or []
        if any(isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str) for a in args):
            raise DSLError(f"`{fn}` takes no keyword arguments", span, "pass arguments by position")
        args = [self.expr(a) for a in args]
        arity = {"where": 3, "min": 2, "max": 2, "clamp": 3, **{c: 1 for c in CASTS},
                 **{f: 1 for f in FUNCS}}
        if fn not in arity:
            raise DSLError(f"unknown function `{fn}`", span,
                           "known: " + ", ".join(sorted(arity)))
        if len(args) != arity[fn]:
            raise DSLError(f"`{fn}` takes {arity[fn]} argument(s), got {len(args)}", span,
                           "check the call")
        if fn == "where":
            return where(*args, span)
        if fn in ("min", "max"):
            return binary(fn, *args, span)
        if fn == "clamp":
            return clamp(*args, span)
        if fn in CASTS:
            return cast(args[0], CASTS[fn], span)
        return call(fn, args[0], span)

    # -- declarations and statements ---------------------------------------------------------
    def param(self, t):
        name_tok, dtype_tok, *dims = t.children
        name, dtype = str(name_tok), str(dtype_tok)
        if dtype not in TENSOR_DTYPES:
            raise DSLError(f"unknown tensor type `{dtype}`", self.sp(dtype_tok),
                           "use one of " + ", ".join(TENSOR_DTYPES))
        if name in self.params or name in INDEX_VARS or name == "score":
            raise DSLError(f"parameter name `{name}` is already taken", self.sp(name_tok),
                           "choose another name")
        shape = tuple(int(d) if d.type == "INT" else str(d) for d in dims if d is not None)
        self.params[name] = Param(name, dtype, shape, self.sp(t))
        return self.params[name]

    def const_decl(self, t):
        name_tok, type_tok, value = t.children
        name, span = str(name_tok), self.sp(t)
        if str(type_tok) not in SCALAR_DECL:
            raise DSLError(f"unknown constant type `{type_tok}`", self.sp(type_tok),
                           "use int, float or bool")
        if name in self.consts or name in self.params or name in INDEX_VARS:
            raise DSLError(f"`{name}` is already defined", self.sp(name_tok), "choose another name")
        dtype = SCALAR_DECL[str(type_tok)]
        value = self.expr(value)
        if not isinstance(value, Const):
            raise DSLError(f"constant `{name}` needs a literal value", value.span or span,
                           "write a number such as 128")
        v = self.overrides.pop(name, value.value)
        self.consts[name] = ConstDecl(name, dtype, _coerce(v, dtype, name, span), span)

    def let_stmt(self, t):
        name_tok, value = t.children
        name = str(name_tok)
        if name in INDEX_VARS or name == "score" or name in self.params or name in self.consts:
            raise DSLError(f"`let {name}` would hide a built-in or declared name",
                           self.sp(name_tok), "choose another name")
        self.lets[name] = self.expr(value)

    def score_stmt(self, t):
        self.score = self.expr(t.children[0])

    def mask_stmt(self, t):
        self.mask = self.expr(t.children[0])

    def out_stmt(self, t):
        self.out = self.expr(t.children[0])

    def normalize_stmt(self, t):
        n = str(t.children[0])
        if n not in NORMALIZERS:
            raise DSLError(f"unknown normalizer `{n}`", self.sp(t.children[0]),
                           "use one of " + ", ".join(NORMALIZERS))
        self.normalizer = n

    def selref(self, t):
        return SelRef(str(t.children[0]))

    def negated_ref(self, t):
        return SelRef(str(t.children[0]), True)

    def select_stmt(self, t):
        name_tok, kind_tok, args = t.children
        name, kind, span = str(name_tok), str(kind_tok), self.sp(t)
        pos, kw = _split_args(args or [], span)
        if kind == "static":
            if len(pos) != 1 or kw:
                raise DSLError("static() takes one mask expression", span, "write static(q_idx >= kv_idx)")
            self.selections.append(StaticSelect(name, self.expr(pos[0]), span))
        elif kind == "topk":
            if pos:
                raise DSLError("topk() takes keyword arguments only", span,
                               "write topk(block=64, k=8)")
            block, k = _int_kw(kw, "block", span, self), _int_kw(kw, "k", span, self)
            per = _sym_kw(kw, "per", ("q_block", "q_token"), "q_block", span)
            pool = _sym_kw(kw, "pool", ("mean", "max"), "mean", span)
            force = kw.pop("force", ())
            force = tuple(f.name if isinstance(f, Symbol) else _bad_force(f, span)
                          for f in (force if isinstance(force, tuple) else (force,)))
            _no_extra(kw, span)
            self.selections.append(TopKSelect(name, block, k, per, pool, force, span))
        else:
            raise DSLError(f"unknown selection `{kind}`", self.sp(kind_tok), "use static(...) or topk(...)")

    def branch_stmt(self, t):
        name_tok, kind_tok, args, ref = t.children
        name, kind, span = str(name_tok), str(kind_tok), self.sp(t)
        pos, kw = _split_args(args or [], span)
        if kind == "softmax":
            score = self.expr(pos[0]) if pos else Var("score", FLOAT, span)
            if len(pos) > 1 or kw:
                raise DSLError("softmax() takes one score expression", span, "write softmax(score)")
            self.branches.append(SoftmaxBranch(name, score, ref, span))
        elif kind == "linear":
            phi = _sym_kw(kw, "phi", FEATURE_MAPS, "elu1", span)
            decay = kw.pop("decay", None)
            _no_extra(kw, span)
            if pos:
                raise DSLError("linear() takes keyword arguments only", span, "write linear(phi=elu1)")
            self.branches.append(LinearBranch(name, phi, None if decay is None else self.expr(decay),
                                              ref, span))
        elif kind == "pooled":
            block = _int_kw(kw, "block", span, self)
            _no_extra(kw, span)
            self.branches.append(PooledBranch(name, block, ref, span))
        else:
            raise DSLError(f"unknown branch kind `{kind}`", self.sp(kind_tok),
                           "use softmax(...), linear(...) or pooled(...)")

    def variant(self, t):
        name = str(t.children[0])
        span = self.sp(t)
        if self.overrides:
            raise DSLError(f"unknown constant(s) {', '.join(sorted(self.overrides))}", span,
                           "declared: " + (", ".join(self.consts) or "none"))
        simple = self.score is not None or self.mask is not None
        if simple and (self.selections or self.branches or self.out is not None):
            raise DSLError("mix of `score =`/`mask =` with select/branch/out", span,
                           "use either the short form or branches, not both")
        params, consts = tuple(self.params.values()), tuple(self.consts.values())
        if not self.branches:
            score = self.score if self.score is not None else Var("score", FLOAT)
            if score.dtype == BOOL:
                raise DSLError("the score must be a number, got bool", score.span,
                               "write e.g. `score = where(c, score, -inf)`")
            score = cast(score, FLOAT, score.span)
            return Program.flex_like(name, params, consts, score, self.mask)
        if self.out is None:
            if len(self.branches) != 1:
                raise DSLError("several branches need an `out = ...` statement", span,
                               "e.g. `out = a + b`")
            self.out = Var(self.branches[0].name, "vec")
        return Program(name, params, consts, tuple(self.selections), tuple(self.branches),
                       Combiner(self.normalizer, self.out))

    def start(self, t):
        return t.children[0]


def _vec_operand(x, params) -> Expr | None:
    """Branch outputs and whole parameters inside `out = ...`."""
    if getattr(x, "dtype", None) == "vec":
        return x
    if isinstance(x, Symbol) and x.name in params and params[x.name].shape:
        return Var(x.name, "param", x.span)
    return None


def _coerce(v, dtype: str, name: str, span: Span):
    if dtype == FLOAT and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if dtype == INT and isinstance(v, int) and not isinstance(v, bool):
        return v
    if dtype == BOOL and isinstance(v, bool):
        return v
    raise DSLError(f"constant `{name}` is declared {dtype} but got {v!r}", span,
                   f"pass a {dtype} value")


def _split_args(args, span):
    pos = [a for a in args if not (isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str))]
    kw = dict(a for a in args if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str))
    return pos, kw


def _int_kw(kw, key, span, b: _Build) -> int:
    if key not in kw:
        raise DSLError(f"missing `{key}=`", span, f"add {key}=<int>")
    v = kw.pop(key)
    if isinstance(v, Var) and v.name in b.consts:
        v = Const(b.consts[v.name].value, b.consts[v.name].dtype)
    if not (isinstance(v, Const) and v.dtype == INT and v.value > 0):
        raise DSLError(f"`{key}=` needs a positive int", span, f"write {key}=64")
    return v.value


def _sym_kw(kw, key, allowed, default, span) -> str:
    v = kw.pop(key, None)
    if v is None:
        return default
    if not (isinstance(v, Symbol) and v.name in allowed):
        raise DSLError(f"`{key}=` must be one of {', '.join(allowed)}", span, f"write {key}={default}")
    return v.name


def _no_extra(kw, span):
    if kw:
        raise DSLError(f"unknown argument(s) {', '.join(sorted(kw))}", span, "remove them")


def _bad_force(f, span):
    raise DSLError("force=[...] takes names (own, sink, window)", span, "write force=[own]")


def parse(text: str, file: str = "<string>", **overrides) -> Program:
    """Parse DSL text into a Program; `overrides` replace declared constants' defaults."""
    src = _Source(text, file)
    _check_brackets(src)
    try:
        tree = lark_parser().parse(text)
    except UnexpectedInput as err:
        raise _parse_error(err, src) from None
    try:
        return verify(_Build(src, overrides).transform(tree))
    except VisitError as err:
        if isinstance(err.orig_exc, DSLError):
            raise err.orig_exc from None
        if os.environ.get("ATTN_DEBUG_FRONTEND") == "1":
            raise
        span = src.of(err.obj) if isinstance(err.obj, (Tree, Token)) else None
        raise DSLError(f"internal compiler error: {type(err.orig_exc).__name__}: {err.orig_exc}",
                       span, "please report this with the source above") from None


def parse_file(path: str, **overrides) -> Program:
    with open(path, encoding="utf-8") as f:
        return parse(f.read(), file=path, **overrides)


def replace_consts(prog: Program, **overrides) -> Program:
    """Programs with the given constants' values replaced (for Variant re-specialisation)."""
    consts = tuple(replace(c, value=_coerce(overrides.pop(c.name, c.value), c.dtype, c.name, c.span))
                   for c in prog.consts)
    return replace(prog, consts=consts)
