"""Passes: rewrite rules and simplify preserve meaning, block classification is conservative and
tight where it should be, symbolic derivatives agree with autograd."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import attnforge
from attnforge.ir import BOOL, FLOAT, INT, Load, Program, Var, binary, const, format_expr
from attnforge.ir.expr import walk
from attnforge.passes import canonicalize, classify_blocks, differentiate, lower, simplify
from attnforge.passes.patterns import build
from attnforge.passes.simplify import RULES
from attnforge.reference import Evaluator, index_env
from strategies import PARAMS, mask_expr, score_expr

GEN = torch.Generator().manual_seed(0)
TENSORS = {
    "doc": torch.sort(torch.randint(0, 9, (300,), generator=GEN)).values.to(torch.int32),
    "flag": torch.rand(300, generator=GEN) < 0.2,
    "bias": torch.randn(4, 300, generator=GEN, dtype=torch.float64),
}
BS, HS, LS = 2, 4, 48


def _env(seed=0):
    g = torch.Generator().manual_seed(seed)
    env = index_env(BS, HS, LS, LS, "cpu")
    env["score"] = torch.randn(BS, HS, LS, LS, generator=g, dtype=torch.float64) * 3
    return env


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    a, b = torch.broadcast_tensors(a, b)
    if a.dtype == torch.bool or not a.is_floating_point():
        return torch.equal(a.to(torch.int64), b.to(torch.int64))
    return torch.allclose(a, b.to(a.dtype), rtol=1e-9, atol=1e-9, equal_nan=True)


# ---- rewrite rules ---------------------------------------------------------------------------
def _pattern_vars(p, out):
    if p.kind == "var":
        out[p.op] = p.dtype
    for a in p.args:
        if hasattr(a, "kind"):
            _pattern_vars(a, out)
    return out


@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_each_rewrite_rule_preserves_meaning(rule):
    name, pat, rep = rule
    variables = _pattern_vars(pat, {})
    g = torch.Generator().manual_seed(1)
    values = {FLOAT: torch.randn(64, generator=g, dtype=torch.float64) * 5,
              INT: torch.randint(-50, 50, (64,), generator=g),
              BOOL: torch.rand(64, generator=g) < 0.5}
    checked = 0
    for dtype in (FLOAT, INT, BOOL):
        env = {v: Var(v, t or dtype) for v, t in variables.items()}
        try:
            lhs, rhs = build(pat, env), build(rep, env)
        except attnforge.DSLError:
            continue  # the pattern is not well-typed at this dtype
        if lhs.dtype != rhs.dtype:
            continue
        tens = {v: values[e.dtype].roll(i) for i, (v, e) in enumerate(env.items())}
        ev = Evaluator(tens, {})
        assert _equal(ev(lhs), ev(rhs)), f"{name}: {format_expr(lhs)} != {format_expr(rhs)}"
        checked += 1
    assert checked, f"rule {name} was never well-typed"


# ---- simplify --------------------------------------------------------------------------------
@given(score_expr, st.none() | mask_expr)
def test_simplify_preserves_meaning(score, mask):
    prog = Program.flex_like("v", PARAMS, (), score, mask)
    low = simplify(canonicalize(prog))
    env = _env()
    for before, after in zip(_exprs(prog), _exprs(low)):
        a = Evaluator(env, TENSORS)(before)
        b = Evaluator(env, TENSORS)(after)
        assert _equal(a, b), f"{format_expr(before)}  =>  {format_expr(after)}"
    assert len(_exprs(prog)) >= len(_exprs(low))


def _exprs(p: Program):
    flex = p.as_flex()
    return [e for e in flex if e is not None]


def test_simplify_uses_sympy_and_rules():
    v = attnforge.compile("""attention v() {
      score = (score * 2.0 + score) / 3.0 + 0.0
      mask = ~(q_idx < kv_idx) & true
    }""")
    out = str(v.lowered)
    assert "score = score\n" not in out  # the score is the identity: printed as no statement
    assert "score =" not in out
    assert "mask = q_idx >= kv_idx" in out


# ---- classify_blocks -------------------------------------------------------------------------
def _tiles(BM, BN, Lq, Lk, off_q, off_k):
    q_lo = torch.arange(off_q, Lq, BM)
    k_lo = torch.arange(off_k, Lk, BN)
    return (q_lo, torch.clamp(q_lo + BM - 1, max=Lq - 1), k_lo, torch.clamp(k_lo + BN - 1, max=Lk - 1))


def classify(rule, b, h, q_lo, q_hi, k_lo, k_hi, tensors):
    env = {"b": torch.tensor(b), "h": torch.tensor(h), "q_lo": q_lo.view(-1, 1),
           "q_hi": q_hi.view(-1, 1), "kv_lo": k_lo.view(1, -1), "kv_hi": k_hi.view(1, -1)}
    ev = Evaluator(env, tensors)
    shape = (len(q_lo), len(k_lo))
    return ev(rule.may_true).expand(shape), ev(rule.may_false).expand(shape)


@given(mask_expr, st.integers(1, 64), st.integers(1, 64), st.integers(1, 300), st.integers(1, 300),
       st.integers(0, 7), st.integers(0, 7), st.integers(0, 1), st.integers(0, 3))
def test_classify_blocks_is_conservative(mask, BM, BN, Lq, Lk, off_q, off_k, b, h):
    off_q, off_k = min(off_q, Lq - 1), min(off_k, Lk - 1)
    prog = classify_blocks(simplify(canonicalize(Program.flex_like("v", PARAMS, (), _score(), mask))))
    (sel_mask,) = [s.mask for s in prog.selections] or [None]
    if sel_mask is None:
        return
    (rule,) = prog.block_rules
    env = index_env(1, 1, Lq, Lk, "cpu")
    env["b"], env["h"] = torch.tensor(b), torch.tensor(h)
    dense = Evaluator(env, TENSORS)(sel_mask).expand(1, 1, Lq, Lk)[0, 0]
    tiles = _tiles(BM, BN, Lq, Lk, off_q, off_k)
    may_t, may_f = classify(rule, b, h, *tiles, TENSORS)
    for i, (a, z) in enumerate(zip(tiles[0], tiles[1])):
        for j, (c, w) in enumerate(zip(tiles[2], tiles[3])):
            block = dense[a:z + 1, c:w + 1]
            if not may_t[i, j]:
                assert not block.any(), f"tile ({i},{j}) called empty: {format_expr(sel_mask)}"
            if not may_f[i, j]:
                assert block.all(), f"tile ({i},{j}) called full: {format_expr(sel_mask)}"


def _score():
    return Var("score", FLOAT)


def _counts(src, L, BM=64, BN=64, **tensors):
    v = attnforge.compile(src)
    (rule,) = v.lowered.block_rules
    t, f = classify(rule, 0, 0, *_tiles(BM, BN, L, L, 0, 0), tensors)
    empty, full = int((~t).sum()), int((~f).sum())
    return empty, full, t.numel() - empty - full


def test_causal_classification_is_exact():
    # 4x4 tiles: 6 above the diagonal empty, 6 below full, 4 diagonal partial
    assert _counts("attention c() { mask = q_idx >= kv_idx }", 256) == (6, 6, 4)


def test_sliding_window_and_document_tiles():
    src = "attention w() { mask = (q_idx >= kv_idx) & (q_idx - kv_idx < 128) }"
    empty, full, partial = _counts(src, 512)
    # 8x8 tiles; q - kv spans [64d - 63, 64d + 63] on band d = i - j: d = 1 is full, d = 0 and
    # d = 2 are partial, the rest empty
    assert (empty, full, partial) == (43, 7, 14)
    doc = torch.repeat_interleave(torch.arange(4, dtype=torch.int32), 128)
    src = "attention d(doc: i32[L]) { mask = doc[q_idx] == doc[kv_idx] }"
    assert _counts(src, 512, doc=doc) == (48, 16, 0)
    src = "attention d(doc: i32[L]) { mask = (doc[q_idx] == doc[kv_idx]) & (q_idx >= kv_idx) }"
    # per document 2x2 tiles: one full, two diagonal partial, one empty; 48 cross-document empty
    assert _counts(src, 512, doc=doc) == (52, 4, 8)


def test_per_head_rule_depends_on_h():
    v = attnforge.compile("attention p() { mask = where(h < 2, q_idx >= kv_idx, kv_idx < 64) }")
    (rule,) = v.lowered.block_rules
    tiles = _tiles(64, 64, 256, 256, 0, 0)
    t0, _ = classify(rule, 0, 0, *tiles, {})
    t3, f3 = classify(rule, 0, 3, *tiles, {})
    assert int((~t0).sum()) == 6 and int((~t3).sum()) == 12 and int((~f3).sum()) == 4


# ---- differentiate ---------------------------------------------------------------------------
@given(score_expr)
def test_derivatives_match_autograd(score):
    prog = differentiate(simplify(canonicalize(Program.flex_like("v", PARAMS, (), score, None))))
    (grad,) = prog.grads
    (z_expr, _) = prog.as_flex()
    env = _env(seed=2)
    env["score"].requires_grad_(True)
    bias = TENSORS["bias"].clone().requires_grad_(True)
    tensors = {**TENSORS, "bias": bias}
    z = Evaluator(env, tensors)(z_expr)
    if not z.requires_grad:
        return
    z = z.expand(BS, HS, LS, LS)
    if not torch.isfinite(z).all():
        return
    d_score, d_bias = torch.autograd.grad(z.sum(), (env["score"], bias), allow_unused=True)
    ev = Evaluator({k: t.detach() for k, t in env.items()}, TENSORS)
    ours = ev(grad.d_score).expand(BS, HS, LS, LS)
    assert _equal(ours, d_score if d_score is not None else torch.zeros_like(ours)), \
        format_expr(grad.d_score)
    mine = torch.zeros_like(TENSORS["bias"])
    for load, d in grad.d_loads:
        assert isinstance(load, Load) and load.param == "bias"
        idx = [ev(i).expand(BS, HS, LS, LS).reshape(-1) for i in load.index]
        mine.index_put_(tuple(idx), ev(d).expand(BS, HS, LS, LS).reshape(-1), accumulate=True)
    assert torch.allclose(mine, d_bias if d_bias is not None else torch.zeros_like(mine),
                          atol=1e-8, equal_nan=True)


def test_softcap_derivative_is_one_minus_tanh_squared():
    v = attnforge.compile("attention s() { score = 30.0 * tanh(score / 30.0) }")
    (g,) = v.lowered.grads
    assert format_expr(g.d_score) == "1 - tanh(score / 30) * tanh(score / 30)"


def test_lower_reports_every_pass():
    seen = []
    lower(attnforge.compile("attention c() { mask = q_idx >= kv_idx }").ir,
          on_pass=lambda n, p: seen.append(n))
    assert seen == ["input", "canonicalize", "simplify", "classify_blocks", "differentiate"]


def test_toeplitz_reads_are_recognised():
    """Reads indexed through q_idx - kv_idx only (also under floor division, modulo and clamps) and
    nothing else."""
    from attnforge.passes.toeplitz import toeplitz_loads

    L = 64
    bias, per_key = torch.randn(4, 2 * L - 1), torch.randn(4, L)
    mods = {
        "distance": (lambda s, b, h, q, k: s + bias[h, q - k + L - 1], [0]),
        "halved": (lambda s, b, h, q, k: s + bias[h, (q - k) // 2 + L - 1], [0]),
        "wrapped": (lambda s, b, h, q, k: s + bias[h, (q - k) % L], [0]),
        "wrapped_key": (lambda s, b, h, q, k: s + bias[h, (q - 2 * k) % L], []),
        "per_key": (lambda s, b, h, q, k: s + per_key[h, k], []),
        "clamped_times_row": (lambda s, b, h, q, k: s + bias[h, torch.clamp(q - k, -5, 5) + L - 1]
                              * per_key[h, q], [0]),
        "sum": (lambda s, b, h, q, k: s + bias[h, q + k], []),
        "shifted_once": (lambda s, b, h, q, k: s + bias[h, q - 2 * k + L - 1], []),
    }
    for name, (mod, expected) in mods.items():
        v = attnforge.compile(score_mod=mod)
        assert toeplitz_loads(v.lowered) == expected, name


# ---- affine score mods (passes/affine.py) ------------------------------------------------------
@given(score_expr, st.integers(0, LS - 1))
def test_affine_split_preserves_meaning(score, q0):
    """A score_mod found affine equals slope * score + offset; where the offset separates, the
    forward's column vector at row q0 plus the LSE's row part give it back for every row."""
    from attnforge.passes.affine import affine_score

    low = simplify(canonicalize(Program.flex_like("v", PARAMS, (), score, None)))
    aff = affine_score(low)
    if aff is None:
        return
    env = {**_env(), "q0": torch.tensor(q0)}
    ev = Evaluator(env, TENSORS)
    f = low.as_flex()[0]
    assert _equal(ev(f), ev(aff.scale) * env["score"] + ev(aff.offset)), format_expr(f)
    if aff.separable:
        ev = Evaluator(env, TENSORS)
        rows = ev(aff.row_offset()).expand(BS, HS, LS, 1)
        assert _equal(ev(aff.offset), ev(aff.col_offset()) + rows), format_expr(f)


def test_affine_score_mods_are_recognised():
    """ALiBi separates into rows and columns; a distance bias is affine but does not separate;
    softcap is not affine; a slope may read the head, never an index."""
    from attnforge.passes.affine import affine_score

    L = 64
    bias, temp = torch.randn(4, 2 * L - 1), torch.rand(4) + 0.5
    mods = {
        "alibi": (lambda s, b, h, q, k: s + (k - q) * torch.exp2(-(h + 1.0)), True),
        "distance": (lambda s, b, h, q, k: s + bias[h, q - k + L - 1], False),
        "temperature": (lambda s, b, h, q, k: s * temp[h] + 0.5 * k - q * q, True),
        "softcap": (lambda s, b, h, q, k: 30.0 * torch.tanh(s / 30.0), None),
        "index_slope": (lambda s, b, h, q, k: s * (1.0 + q), None),
    }
    for name, (mod, separable) in mods.items():
        aff = affine_score(attnforge.compile(score_mod=mod).lowered)
        assert (aff is None if separable is None else aff.separable == separable), name
    assert affine_score(attnforge.compile("attention c() { mask = q_idx >= kv_idx }").lowered) is None
    # the column vector keeps the index difference exact: kv_idx - q0, not slope * kv_idx - slope * q0
    aff = affine_score(attnforge.compile(score_mod=mods["alibi"][0]).lowered)
    assert "kv_idx - q0" in format_expr(aff.col_offset())


# ---- masks as a forward program evaluates them (passes/rows.py) --------------------------------
_index_sum = st.recursive(st.sampled_from([Var(n, INT) for n in ("q_idx", "kv_idx", "b", "h")])
                          | st.integers(-40, 40).map(const),
                          lambda c: st.tuples(st.sampled_from(["add", "sub"]), c, c).map(lambda t: binary(*t)),
                          max_leaves=5)
_index_cmp = st.tuples(st.sampled_from(["lt", "le", "gt", "ge", "eq", "ne"]), _index_sum, _index_sum) \
    .map(lambda t: binary(*t))


@given(mask_expr | _index_cmp | st.tuples(_index_cmp, mask_expr).map(lambda t: binary("and", *t)))
def test_separated_and_hoisted_masks_mean_the_same(mask):
    """`separate` keeps a mask's meaning; `hoist_rows`' parts read no kv_idx, and put back in place
    of their variables they give the mask again."""
    from attnforge.passes.rows import hoist_rows, separate

    low = simplify(canonicalize(Program.flex_like("v", PARAMS, (), Var("score", FLOAT), mask)))
    m = low.as_flex()[1]
    if m is None:
        return
    ev = Evaluator(_env(), TENSORS)
    for alone, fixed in (("kv_idx", "q_idx"), ("q_idx", "kv_idx")):  # forward and dQ; dK/dV
        sep = separate(m, alone)
        assert _equal(ev(m), ev(sep)), format_expr(m)
        hoisted, rows = hoist_rows(sep, fixed)
        env = _env()
        for name, sub in rows:
            assert alone not in {n.name for n in walk(sub) if isinstance(n, Var)}, format_expr(sub)
            env[name] = Evaluator(env, TENSORS)(sub)
        assert _equal(ev(m), Evaluator(env, TENSORS)(hoisted)), format_expr(m)


def test_index_comparisons_take_the_rows_on_one_side():
    """A window's `q_idx - kv_idx < 1024` compares a per-row value with kv_idx; comparisons already
    in that form, or not index sums, stay as written; document ids of the rows are hoisted."""
    from attnforge.passes.rows import hoist_rows, separate

    ids = torch.arange(64) // 16
    cases = {
        "sliding": (lambda b, h, q, k: (q >= k) & (q - k < 1024), "(q_idx >= kv_idx) & (q_idx - 1024 < kv_idx)"),
        "flipped": (lambda b, h, q, k: k - q + 3 <= h, "q_idx + h - 3 >= kv_idx"),
        "prefix": (lambda b, h, q, k: (k < 1024) | (q >= k), "(kv_idx < 1024) | (q_idx >= kv_idx)"),
        "scaled": (lambda b, h, q, k: q - 2 * k > 5, "q_idx - 2 * kv_idx > 5"),
    }
    for name, (mod, text) in cases.items():
        assert format_expr(separate(attnforge.compile(mask_mod=mod).lowered.as_flex()[1])) == text, name
    doc = attnforge.compile(mask_mod=lambda b, h, q, k: (ids[q] == ids[k]) & (q - k < 9)).lowered.as_flex()[1]
    m, rows = hoist_rows(separate(doc))
    assert [format_expr(sub) for _, sub in rows] == ["ids[q_idx]", "q_idx - 9"]
    assert format_expr(m) == "(__row0 == ids[kv_idx]) & (__row1 < kv_idx)"
    # the dK/dV program's orientation: q_idx alone, the keys' parts hoisted
    m, rows = hoist_rows(separate(doc, "q_idx"), "kv_idx")
    assert [format_expr(sub) for _, sub in rows] == ["ids[kv_idx]", "kv_idx + 9"]
    assert format_expr(m) == "(ids[q_idx] == __row0) & (__row1 > q_idx)"
