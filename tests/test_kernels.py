"""Generated Triton kernels (CPU: Triton's interpreter) against the float64 reference.

Rule for out, lse and every gradient: max|kernel - gold| <= 2 * max|eager_lowp - gold| + atol,
where eager_lowp is the reference evaluated in the test dtype."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import attnforge
from attnforge.passes.affine import affine_score
from attnforge.runtime import launch
from conftest import EXAMPLES, assert_close_rule, load_example
from strategies import PARAMS, mask_expr, score_expr

ATOL = {torch.float32: (3e-6, 3e-5), torch.float16: (2e-3, 2e-2), torch.bfloat16: (1e-2, 1e-1)}


def _inputs(B, Hq, Hkv, Lq, Lk, D, Dv, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, Lq, D, generator=g)
    k = torch.randn(B, Hkv, Lk, D, generator=g)
    v = torch.randn(B, Hkv, Lk, Dv, generator=g)
    do = torch.randn(B, Hq, Lq, Dv, generator=g)
    dlse = torch.randn(B, Hq, Lq, generator=g)
    return [t.to(dtype) for t in (q, k, v, do)] + [dlse]


def _run(fn, q, k, v, do, dlse, tensors: dict):
    """out, lse and gradients of (out * do).sum() + (lse * dlse).sum() for q, k, v and tensors."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    learn = {n: t.detach().clone().requires_grad_() for n, t in tensors.items() if t.is_floating_point()}
    out, lse = fn(*leaves, **{**tensors, **learn})
    live = torch.isfinite(lse)
    loss = (out.double() * do.double()).sum() + (lse.double() * dlse.double())[live].sum()
    loss.backward()
    return [out, lse] + [t.grad for t in leaves] + [learn[n].grad for n in sorted(learn)]


def check_variant(variant, B, Hq, Hkv, Lq, Lk, D, Dv, dtype, tensors=None, seed=0, device="cpu",
                  layout=None):
    """`layout` re-lays q, k, v and dO in memory (same values, other strides)."""
    tensors = {n: t.to(device) for n, t in (variant.tensors if tensors is None else tensors).items()}
    q, k, v, do, dlse = (t.to(device) for t in _inputs(B, Hq, Hkv, Lq, Lk, D, Dv, dtype, seed))
    if layout is not None:
        q, k, v, do = (layout(t) for t in (q, k, v, do))
    gqa = Hq != Hkv

    def kernel(q, k, v, **t):
        return variant(q, k, v, return_lse=True, enable_gqa=gqa, **t)

    def eager(q, k, v, **t):
        return variant.reference(q, k, v, return_lse=True, enable_gqa=gqa, **t)

    def cast(ts, dt):
        return {n: t.to(dt) if t.is_floating_point() else t for n, t in ts.items()}

    got = _run(kernel, q, k, v, do, dlse, cast(tensors, torch.float32))
    gold = _run(eager, q.double(), k.double(), v.double(), do, dlse, cast(tensors, torch.float64))
    lowp = _run(eager, q, k, v, do, dlse, cast(tensors, dtype))
    names = ["out", "lse", "dq", "dk", "dv"] + sorted(n for n, t in tensors.items() if t.is_floating_point())
    for i, (name, a, b, c) in enumerate(zip(names, got, gold, lowp)):
        atol = ATOL[dtype][0 if i < 2 else 1]
        assert_close_rule(name, a, b, c, atol=atol * max(1.0, b.abs().max().item()))
    return got


EXAMPLE_NAMES = ["causal", "sliding_window", "prefix_lm", "document", "alibi", "softcap", "rel_bias",
                 "per_head"]


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_fwd_bwd(name):
    mod = load_example(name)
    variant = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod)
    check_variant(variant, 2, 4, 4, 256, 256, 32, 32, torch.float32)


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_examples_dsl_bf16(name):
    """The DSL versions, in bfloat16, with the snippet's captured tensors."""
    mod = load_example(name)
    tensors = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod).tensors
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"))
    check_variant(variant, 1, 4, 4, 256, 256, 32, 32, torch.bfloat16, tensors=tensors)


SHAPES = [  # B, Hq, Hkv, Lq, Lk, D, Dv, dtype
    (1, 2, 2, 200, 200, 24, 24, torch.float32),
    (2, 2, 2, 77, 200, 72, 72, torch.float16),
    (1, 8, 2, 150, 150, 32, 48, torch.float32),
    (1, 4, 1, 200, 77, 16, 16, torch.bfloat16),
    (1, 2, 2, 130, 130, 96, 64, torch.float32),
]


def _ids(s):
    B, Hq, Hkv, Lq, Lk, D, Dv, dt = s
    return f"B{B}-H{Hq}:{Hkv}-Lq{Lq}-Lk{Lk}-D{D}-Dv{Dv}-{str(dt).split('.')[1]}"


@pytest.mark.parametrize("shape", SHAPES, ids=[_ids(s) for s in SHAPES])
def test_odd_shapes(shape):
    B, Hq, Hkv, Lq, Lk, D, Dv, dtype = shape
    src = """attention banded() {
      score = 20.0 * tanh(score / 20.0) - 0.01 * abs(q_idx - kv_idx)
      mask = (kv_idx <= q_idx + 40) & (kv_idx + 60 > q_idx)
    }"""
    check_variant(attnforge.compile(src), B, Hq, Hkv, Lq, Lk, D, Dv, dtype)


LAYOUTS = {
    # [B, L, H, D] storage (as a projection's output viewed per head): tiles still load through TMA
    "bshd": (lambda t: t.transpose(1, 2).contiguous().transpose(1, 2), True),
    # head dim not innermost: no tensor descriptor possible, tiles load through pointers
    "d_outer": (lambda t: t.transpose(2, 3).contiguous().transpose(2, 3), False),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_memory_layouts(name):
    relayout, tma = LAYOUTS[name]
    q = relayout(torch.randn(1, 2, 130, 24))
    assert launch._tma_ok(SimpleNamespace(tma=True), q) is tma  # a TMA-capable device; this layout
    src = "attention c() { score = score - 0.02 * abs(q_idx - kv_idx)\n mask = q_idx >= kv_idx }"
    check_variant(attnforge.compile(src), 1, 2, 2, 130, 130, 24, 24, torch.float32, layout=relayout)


def test_forward_through_tensor_descriptors(monkeypatch):
    """The forward's TMA path (the autotuner's pick on some GPUs; the default loads through pointers)."""
    from attnforge.codegen import configs

    fwd = [(limit, dataclasses.replace(default, tma=True), cands)
           for limit, default, cands in configs.CONFIGS["fwd"]]
    monkeypatch.setitem(configs.CONFIGS, "fwd", fwd)
    assert launch.tile_config("fwd", 32).tma
    src = "attention c() { score = score - 0.02 * abs(q_idx - kv_idx)\n mask = q_idx >= kv_idx }"
    check_variant(attnforge.compile(src), 1, 2, 2, 130, 100, 24, 24, torch.float32,
                  layout=LAYOUTS["bshd"][0])


def test_fully_masked_rows():
    v = attnforge.compile("attention strict() { mask = (kv_idx < q_idx) & (q_idx != 100) }")
    out, lse, dq, dk, dv = check_variant(v, 1, 2, 2, 150, 150, 32, 32, torch.float32)
    for row in (0, 100):
        assert (out[:, :, row] == 0).all() and torch.isneginf(lse[:, :, row]).all()
        assert (dq[:, :, row] == 0).all()
    for t in (out, dq, dk, dv):
        assert not torch.isnan(t).any()


def test_affine_score_mod_moves_its_row_part_to_the_lse():
    """A score_mod a(h) * score + row(q) + col(kv) (passes/affine.py): the forward adds the
    columns' vector at each tile's first row and the rest of the row part to the LSE only. Against
    the reference: output, LSE (its row part included; -inf on fully masked rows) and gradients of
    every learnable tensor, GQA, Lq != Lk, a head dim of 24."""
    temp = torch.rand(4) + 0.5
    per_key, per_query = torch.randn(110) * 0.5, torch.randn(90) * 0.5
    src = ("attention affine(temp: f32[H], per_key: f32[N], per_query: f32[M]) {\n"
           " score = score * temp[h] + per_key[kv_idx] + 40.0 * per_query[q_idx] + 0.05 * (kv_idx - q_idx)\n"
           " mask = (kv_idx <= q_idx + 7) & (q_idx != 50) }")
    v = attnforge.compile(src)
    assert affine_score(v.lowered).separable and "lse = lse + z_r" in v.kernel_source("fwd")
    out, lse = check_variant(v, 2, 4, 2, 90, 110, 24, 24, torch.float32,
                             tensors={"temp": temp, "per_key": per_key, "per_query": per_query})[:2]
    assert torch.isneginf(lse[:, :, 50]).all() and (out[:, :, 50] == 0).all()


def test_no_mask_and_learnable_tensor_read_twice():
    bias = torch.randn(4, 64, dtype=torch.float32) * 0.3

    def two_reads(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx % 64] * bias[h, kv_idx % 64]

    v = attnforge.compile(score_mod=two_reads)
    assert "b_c_bias = " in v.kernel_source("fwd") and "b_c1_bias = " in v.kernel_source("fwd")
    check_variant(v, 1, 4, 4, 100, 120, 16, 16, torch.float32)


def test_captured_tensors_named_like_the_kernels_own_values():
    """Captured tensors called `delta`, `do` and `lse2` (as the backward's row terms, dO and the base-2
    LSE are named inside the kernels) read in the mask and the score, one of them
    learnable: every kernel and gradient still matches the reference. (Before captured tensors took
    their own prefix, `delta`'s read rebound the backward's `b_delta` and its pointer `p_delta`.)"""
    delta = torch.arange(130, dtype=torch.int32) // 40
    do = torch.randn(4) * 0.3
    lse2 = torch.rand(130) < 0.9

    def score(s, b, h, q_idx, kv_idx):
        return s + do[h]

    def mask(b, h, q_idx, kv_idx):
        return (delta[q_idx] == delta[kv_idx]) & lse2[kv_idx]

    v = attnforge.compile(score_mod=score, mask_mod=mask)
    assert "b_c_delta" in v.kernel_source("bwd") and "b_c_do" in v.kernel_source("fwd")
    check_variant(v, 1, 4, 2, 130, 130, 16, 16, torch.float32,
                  tensors={"delta": delta, "do": do.requires_grad_(), "lse2": lse2})


def test_one_launch_backward_matches_two_launches(monkeypatch):
    """dK/dV and dQ in one launch (the default) give the same bits as the two kernels
    (ATTNFORGE_FUSED_BWD=0), GQA and an odd length included, and the launches are what was chosen."""
    mod = load_example("document")
    variant = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod)
    kinds = []
    real = launch.launch
    monkeypatch.setattr(launch, "launch", lambda k, call, *a, **kw: (kinds.append(call.kind), real(k, call, *a, **kw)))
    got = check_variant(variant, 1, 4, 2, 150, 150, 32, 32, torch.float32)
    assert kinds.count("bwd") == 1 and "bwd_dkdv" not in kinds
    kinds.clear()
    monkeypatch.setattr(launch, "FUSED_BWD", False)
    two = check_variant(variant, 1, 4, 2, 150, 150, 32, 32, torch.float32)
    assert "bwd" not in kinds and kinds.count("bwd_dkdv") == kinds.count("bwd_dq") == 1
    for name, a, b in zip(["dq", "dk", "dv"], got[2:5], two[2:5]):
        assert torch.equal(a, b), name


def test_kernels_walk_metadata_coarser_than_their_tiles(monkeypatch):
    """The variant's 128 x 128 metadata walked by 64- and 32-tile kernels (several steps per listed
    tile: what serves past FINE_MAX_TILES) matches the reference as the kernels' own-size metadata
    (the default) does; a document mask and an odd length put partial, full and empty quarters in it."""
    mod = load_example("document")
    variant = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod)
    sizes = []
    real = launch.launch
    monkeypatch.setattr(launch, "launch", lambda k, call, *a, **kw: (
        sizes.append(call.constexprs.get("SPARSE_M")), real(k, call, *a, **kw)))
    monkeypatch.setattr(launch, "FINE_SPARSE_BLOCK", 128)
    check_variant(variant, 1, 2, 2, 200, 200, 32, 32, torch.float32)
    assert sizes and set(sizes) - {None} == {128}
    sizes.clear()
    monkeypatch.setattr(launch, "FINE_SPARSE_BLOCK", 64)
    check_variant(variant, 1, 2, 2, 200, 200, 32, 32, torch.float32)
    assert 64 in sizes


def test_captured_gradients_are_deterministic():
    mod = load_example("rel_bias")
    variant = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod)
    grads = []
    for _ in range(2):
        bias = mod.rel_bias.detach().clone().requires_grad_()
        q, k, v, do, _ = _inputs(1, 4, 4, 256, 256, 16, 16, torch.float32, seed=7)
        out = variant(q, k, v, rel_bias=bias)
        (out * do).sum().backward()
        grads.append(bias.grad)
    assert torch.equal(grads[0], grads[1])
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("tile,fine", [(64, 64), (32, 64), (64, 128)])
def test_relative_bias_gradient_through_diagonal_kernel(tile, fine, monkeypatch):
    """A bucketed relative-position bias (clamped distance, per head) with GQA, Lq != Lk and a
    banded mask: its gradient comes from bwd_diag (one program per batch * head and band of tiles,
    walking the band's listed tiles) in 64- or 32-square tiles, over block metadata of the tile's
    size or coarser; bands with no tile (above and below the band mask) store zeros."""
    from attnforge.codegen import configs
    from attnforge.runtime import launch

    monkeypatch.setattr(launch, "FINE_SPARSE_BLOCK", fine)
    monkeypatch.setitem(configs.CONFIGS, "bwd_diag", [(256, configs.TileConfig(tile, tile, 4, 1), [])])
    bias = torch.randn(4, 81) * 0.3

    def bucketed(score, b, h, q_idx, kv_idx):
        return score + bias[h, torch.clamp(q_idx - kv_idx, -40, 40) + 40]

    def band(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx + 30) & (q_idx - kv_idx < 90)

    variant = attnforge.compile(score_mod=bucketed, mask_mod=band)
    from attnforge.passes.toeplitz import toeplitz_loads
    assert toeplitz_loads(variant.lowered) == [0]
    check_variant(variant, 3, 4, 2, 150, 200, 24, 24, torch.float32)


def test_relative_bias_gradient_scatter_plans_are_kept_per_sizes():
    """A relative bias's gradient scatters per-distance sums with a plan (sort order, segments) kept
    per sizes: right at two lengths, called again at the first (the kept plan), against the float64
    reference."""
    from attnforge.runtime import ops

    bias = torch.randn(2, 2 * 200 - 1) * 0.3

    def score_mod(score, b, h, q_idx, kv_idx):
        return score + bias[h, q_idx - kv_idx + 199]

    variant = attnforge.compile(score_mod=score_mod, mask_mod=lambda b, h, q, k: q >= k)
    for L in (130, 200, 130):
        check_variant(variant, 2, 2, 2, L, L, 16, 16, torch.float32)
    (kern,) = [k for (key, _, _), k in ops._KERNELS.items() if key == variant._key]
    assert len(kern.diag_index) == 2


def test_distance_tables_carry_toeplitz_reads_of_scores_and_masks():
    """Reads indexed by q_idx - kv_idx come from per-call distance tables: a per-batch, per-head
    bucketed bias (float, learnable: its gradient still comes from bwd_diag) in the score and a bool
    table in the mask (a floored modulo of the distance), with GQA, Lq != Lk, lengths off the tiles;
    a document-style read of one index is not one. The tables' views keep 16-aligned bases and
    strides at every length (a kernel specializes on those: no recompile when L changes)."""
    from attnforge.runtime.tables import add_tables, tables_of

    bias = torch.randn(3, 4, 61) * 0.3
    allowed = torch.rand(50) > 0.2
    ids = torch.arange(200) // 70

    def score(s, b, h, q_idx, kv_idx):
        return s + bias[b, h, torch.clamp(q_idx - kv_idx, -30, 30) + 30]

    def mask(b, h, q_idx, kv_idx):
        return allowed[(q_idx - kv_idx) % 50] & (kv_idx <= q_idx + 20) & (ids[kv_idx] >= 0)

    variant = attnforge.compile(score_mod=score, mask_mod=mask)
    tables = tables_of(variant.lowered)
    assert [(t.load.param, t.by_batch, t.by_head) for t in tables] == [("bias", True, True),
                                                                       ("allowed", False, False)]
    assert "p_dist1__allowed" in variant.kernel_source("fwd") and "p_c_ids" in variant.kernel_source("fwd")
    check_variant(variant, 3, 4, 2, 150, 200, 24, 24, torch.float32)

    kern = type("K", (), {"tables": tables, "table_index": {}})()
    for L in (100, 129, 300):
        named = add_tables(kern, {"bias": bias, "allowed": allowed}, 3, 4, L, L + 7)
        for j in range(2):
            view = next(v for n, v in named.items() if n.startswith(f"dist{j}__"))
            assert view.data_ptr() % 16 == 0 and all(st % 16 == 0 for st in view.stride()[:2])


@given(score_expr, st.none() | mask_expr)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_variants_match_the_reference(score, mask):
    """Random score and mask mods (indices, literals, captured tensors, integer sums in float
    arithmetic, floor division and modulo) keep their meaning through rendering and the kernels:
    forward, backward and the captured float tensor's gradient."""
    from attnforge.codegen import _ignores_score, loaded_params
    from attnforge.ir import Program
    from attnforge.runtime.variant import Variant

    read = loaded_params(score, *([mask] if mask is not None else []))
    v = Variant(Program.flex_like("random_variant", tuple(p for p in PARAMS if p.name in read), (), score, mask))
    # gradients reach q, k and `bias` (the passes drop score terms constant along a row, which
    # softmax ignores, and a score that ignores `score` leaves q and k none)
    low_score = v.lowered.as_flex()[0]
    assume(not _ignores_score(low_score))
    assume("bias" not in read or "bias" in loaded_params(low_score))
    g = torch.Generator().manual_seed(0)
    tensors = {"doc": torch.randint(0, 3, (300,), generator=g, dtype=torch.int32),
               "flag": torch.rand(300, generator=g) > 0.3, "bias": torch.randn(4, 300, generator=g) * 0.5}
    v.tensors = {n: tensors[n] for n in read}
    check_variant(v, 1, 1, 1, 27, 35, 16, 16, torch.float32)
