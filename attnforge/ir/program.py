"""The attention program: parameters, selections, branches and a combiner (see DESIGN.md).

FlexAttention is the special case of one static selection named "mask" feeding one softmax branch
named "attn" under a softmax combiner; `Program.flex_like()` builds and `Program.as_flex()` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .errors import Span
from .expr import FLOAT, Expr, Var

INDEX_VARS = ("b", "h", "q_idx", "kv_idx")
TENSOR_DTYPES = {"f16": FLOAT, "bf16": FLOAT, "f32": FLOAT, "f64": FLOAT,
                 "i8": "int", "i16": "int", "i32": "int", "i64": "int", "u8": "int", "bool": "bool"}
NORMALIZERS = ("softmax", "shared", "sigmoid", "none")
FEATURE_MAPS = ("elu1", "relu", "exp", "softmax", "hedgehog", "identity")

_span = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Param:
    """A captured tensor. `shape` entries are ints or symbolic names (B, H, Lq, Lk or user names)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    span: Span | None = _span

    @property
    def scalar(self) -> str:
        return TENSOR_DTYPES[self.dtype]


@dataclass(frozen=True, slots=True)
class ConstDecl:
    """A compile-time constant with a default, overridable by `attnforge.compile(src, NAME=value)`."""

    name: str
    dtype: str
    value: bool | int | float
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class SelRef:
    name: str
    negate: bool = False


@dataclass(frozen=True, slots=True)
class StaticSelect:
    """Pairs allowed by a mask predicate over (b, h, q_idx, kv_idx) and captured tensors."""

    name: str
    mask: Expr
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class TopKSelect:
    """Data-dependent block selection: pool q and k per block, score, keep the top k (stop-gradient)."""

    name: str
    block: int
    k: int
    per: str = "q_block"
    pool: str = "mean"
    force: tuple[str, ...] = ()
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class SoftmaxBranch:
    name: str
    score: Expr
    select: SelRef | None
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class LinearBranch:
    """Feature-map attention computed chunkwise; `decay` is a per-(b, h, q_idx) log-decay or None."""

    name: str
    phi: str
    decay: Expr | None
    select: SelRef | None
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class PooledBranch:
    """Attention to block-pooled keys and values (NSA compression)."""

    name: str
    block: int
    select: SelRef | None
    span: Span | None = _span


Selection = StaticSelect | TopKSelect
Branch = SoftmaxBranch | LinearBranch | PooledBranch


@dataclass(frozen=True, slots=True)
class Combiner:
    """How branch outputs become one output. `out` reads branches as Var(name, "vec")."""

    normalizer: str
    out: Expr
    span: Span | None = _span


@dataclass(frozen=True, slots=True)
class BlockRule:
    """Tile predicates from `classify_blocks`, over b, h, q_lo, q_hi, kv_lo, kv_hi (inclusive).

    A tile is empty where `may_true` is false and full where `may_false` is false.
    """

    select: str
    may_true: Expr
    may_false: Expr


@dataclass(frozen=True, slots=True)
class ScoreGrad:
    """From `differentiate`: d score_mod / d score, and d score_mod / d each learnable load."""

    branch: str
    d_score: Expr
    d_loads: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True, slots=True)
class Program:
    name: str
    params: tuple[Param, ...]
    consts: tuple[ConstDecl, ...]
    selections: tuple[Selection, ...]
    branches: tuple[Branch, ...]
    combiner: Combiner
    block_rules: tuple[BlockRule, ...] = ()
    grads: tuple[ScoreGrad, ...] = ()

    @staticmethod
    def flex_like(name: str, params, consts, score: Expr, mask: Expr | None) -> "Program":
        sels = () if mask is None else (StaticSelect("mask", mask),)
        branch = SoftmaxBranch("attn", score, None if mask is None else SelRef("mask"))
        return Program(name, tuple(params), tuple(consts), sels, (branch,),
                       Combiner("softmax", Var("attn", "vec")))

    def as_flex(self) -> tuple[Expr, Expr | None] | None:
        """(score, mask) when this is one softmax branch with at most one static selection."""
        if len(self.branches) != 1 or self.combiner != Combiner("softmax", Var("attn", "vec")):
            return None
        (br,) = self.branches
        if not isinstance(br, SoftmaxBranch) or br.name != "attn":
            return None
        if not self.selections:
            return (br.score, None) if br.select is None else None
        if len(self.selections) != 1 or br.select != SelRef("mask"):
            return None
        (sel,) = self.selections
        return (br.score, sel.mask) if isinstance(sel, StaticSelect) and sel.name == "mask" else None

    def __str__(self) -> str:
        from .printer import print_program

        return print_program(self)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def graph(self) -> nx.DiGraph:
        """The op graph: params -> selections -> branches -> combiner."""
        from .expr import Load, walk

        g = nx.DiGraph()
        g.add_node("out", kind="combiner")
        for p in self.params:
            g.add_node(p.name, kind="param")
        for s in self.selections:
            g.add_node(s.name, kind="selection")
            if isinstance(s, StaticSelect):
                for n in walk(s.mask):
                    if isinstance(n, Load):
                        g.add_edge(n.param, s.name)
        for br in self.branches:
            g.add_node(br.name, kind="branch")
            if br.select is not None:
                g.add_edge(br.select.name, br.name)
            exprs = [br.score] if isinstance(br, SoftmaxBranch) else []
            if isinstance(br, LinearBranch) and br.decay is not None:
                exprs.append(br.decay)
            for e in exprs:
                for n in walk(e):
                    if isinstance(n, Load):
                        g.add_edge(n.param, br.name)
        for n in walk(self.combiner.out):
            if isinstance(n, Var):
                g.add_edge(n.name, "out")
        return g
