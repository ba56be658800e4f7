"""hypothesis strategies: random IR expressions, masks, score mods and programs."""
from __future__ import annotations

from hypothesis import strategies as st

from attnforge.ir import (BOOL, FLOAT, INT, Load, Param, Program, Var, binary, call, const, unary,
                          where)

# Captured tensors the strategies may read: doc ids over positions, a bool flag, a float bias.
DOC = Param("doc", "i32", (300,))
FLAG = Param("flag", "bool", (300,))
BIAS = Param("bias", "f32", (4, 300))
PARAMS = (DOC, FLAG, BIAS)

Q, KV, B, H = (Var(n, INT) for n in ("q_idx", "kv_idx", "b", "h"))
SCORE = Var("score", FLOAT)


def _neg(x):
    """Negation as the front ends build it: literals fold (`-3` is a literal, not neg(3))."""
    return const(-x.value) if hasattr(x, "value") and x.dtype != BOOL else unary("neg", x)


def _not(x):
    return const(not x.value) if hasattr(x, "value") and x.dtype == BOOL else unary("not", x)


def _pos(e):
    """A non-negative index in [0, 300) for loads."""
    return binary("mod", e, const(300))


int_leaf = st.one_of(
    st.sampled_from([Q, KV, Q, KV, B, H]),
    st.integers(-40, 40).map(const),
)


def _int_node(children):
    small = st.integers(1, 17).map(const)
    return st.one_of(
        st.tuples(st.sampled_from(["add", "sub", "min", "max"]), children, children)
        .map(lambda t: binary(t[0], t[1], t[2])),
        st.tuples(children, st.integers(-5, 5).map(const)).map(lambda t: binary("mul", t[0], t[1])),
        st.tuples(st.sampled_from(["floordiv", "mod"]), children, small)
        .map(lambda t: binary(t[0], t[1], t[2])),
        children.map(lambda x: call("abs", x)),
        children.map(_neg),
        children.map(lambda x: Load("doc", (_pos(x),), INT)),
    )


int_expr = st.recursive(int_leaf, _int_node, max_leaves=6)


def _bool_node(children):
    return st.one_of(
        st.tuples(st.sampled_from(["and", "or", "xor"]), children, children)
        .map(lambda t: binary(t[0], t[1], t[2])),
        children.map(_not),
        st.tuples(children, children, children).map(lambda t: where(*t)),
    )


bool_leaf = st.one_of(
    st.tuples(st.sampled_from(["lt", "le", "gt", "ge", "eq", "ne"]), int_expr, int_expr)
    .map(lambda t: binary(t[0], t[1], t[2])),
    int_expr.map(lambda x: Load("flag", (_pos(x),), BOOL)),
    st.booleans().map(const),
)
mask_expr = st.recursive(bool_leaf, _bool_node, max_leaves=5)

float_leaf = st.one_of(
    st.just(SCORE), st.just(SCORE),
    st.floats(-4, 4, allow_nan=False, width=32).map(lambda v: const(float(v))),
    int_expr.map(lambda x: binary("mul", x, const(0.01))),
    int_expr.map(lambda x: Load("bias", (binary("mod", H, const(4)), _pos(x)), FLOAT)),
)


def _float_node(children):
    return st.one_of(
        st.tuples(st.sampled_from(["add", "sub", "mul", "min", "max"]), children, children)
        .map(lambda t: binary(t[0], t[1], t[2])),
        st.tuples(st.sampled_from(["tanh", "sigmoid", "abs", "sin", "cos"]), children)
        .map(lambda t: call(t[0], t[1])),
        children.map(lambda x: call("exp", call("tanh", x))),
        st.tuples(children, st.sampled_from([2.0, 3.0, 0.5, 30.0]).map(const))
        .map(lambda t: binary("truediv", t[0], t[1])),
        st.tuples(bool_leaf, children, children).map(lambda t: where(*t)),
        children.map(_neg),
    )


score_expr = st.recursive(float_leaf, _float_node, max_leaves=6)


@st.composite
def programs(draw):
    mask = draw(st.none() | mask_expr)
    score = draw(score_expr)
    return Program.flex_like("random_variant", PARAMS, (), score, mask)
