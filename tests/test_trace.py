"""Python-snippet front end: attn-gym's mods trace and match flex eager; misuse gives DSLErrors."""
from __future__ import annotations

import math

import pytest
import torch
from attn_gym import masks as M
from attn_gym import mods as S
from attn_gym.masks.document_mask import length_to_offsets
from torch.nn.attention.flex_attention import create_block_mask, flex_attention, or_masks

import attnforge
from attnforge.ir import DSLError

torch.manual_seed(0)
OFFSETS = length_to_offsets([20, 13, 31], "cpu")  # 64 tokens in three documents
IS_GLOBAL = torch.zeros(64, dtype=torch.bool)
IS_GLOBAL[[0, 17]] = True
ANCESTORS = M.build_tree_ancestor_matrix([-1, 0, 0, 1, 1, 2, 3, 3], device="cpu")
INTERVALS = torch.tensor([[0, 10], [8, 30], [25, 40]])  # Flamingo: text spans seeing each image
ADJ = (torch.rand(1, 24, 24) < 0.15)
ADJ = ADJ | ADJ.transpose(1, 2)
DIST = S.graphormer.shortest_path_distances(ADJ, 4)
PATH_TYPES, PATH_LEN = S.graphormer.shortest_path_edge_types(ADJ, torch.randint(0, 3, (1, 24, 24)), 3)

# name: (score_mod, mask_mod, B, H, Lq, Lk)
CASES = {
    "natten": (None, M.generate_natten(8, 8, 3, 3), 1, 2, 64, 64),
    "natten_tiled": (None, M.generate_tiled_natten(8, 8, 3, 3, 2, 2), 1, 2, 64, 64),
    "natten_morton": (None, M.generate_morton_natten(8, 8, 3, 3), 1, 2, 64, 64),
    "sliding_window": (None, M.generate_sliding_window(16), 1, 2, 80, 80),
    "dilated_window": (None, M.generate_dilated_sliding_window(16, 3), 1, 2, 80, 80),
    "global_window": (None, M.generate_global_sliding_window(4, IS_GLOBAL), 1, 2, 64, 64),
    "document": (None, M.generate_doc_mask_mod(M.causal_mask, OFFSETS), 1, 2, 64, 64),
    "packed_doc": (None, M.generate_packed_causal_doc_mask_mod(OFFSETS), 1, 2, 64, 64),
    "shared_prefix": (None, M.generate_shared_prefix_mask_mod(OFFSETS, torch.tensor([0, 0, 0])),
                      1, 2, 64, 64),
    "prefix_lm": (None, M.generate_prefix_lm_mask(16), 1, 2, 64, 64),
    "flamingo": (None, M.generate_vision_cross_attention_mask_mod(INTERVALS, 8), 1, 2, 40, 24),
    "sta_2d": (None, M.generate_sta_mask_mod_2d((8, 8), (4, 4), (2, 2), 8), 1, 2, 72, 72),
    "sta_3d": (None, M.generate_sta_mask_mod_3d((2, 4, 4), (2, 2, 2), (1, 2, 2)), 1, 2, 32, 32),
    "svg_spatial": (None, M.generate_spatial_head_mask_mod(8, 4, 16, 1, False, 8), 1, 2, 72, 72),
    "svg_temporal": (None, M.generate_temporal_head_mask_mod(8, 4, 16, 2), 1, 2, 72, 72),
    "block_diffusion": (None, M.generate_block_diffusion_mask(32, 8), 1, 2, 64, 64),
    "batchify": (None, M.batchify_mask_mod(M.causal_mask, 16), 1, 2, 64, 64),
    "jetspec_tree": (None, M.generate_jetspec_tree_causal_mask_mod(8, ANCESTORS), 1, 2, 8, 16),
    "jetspec_train": (None, M.generate_jetspec_training_mask_mod(8, 4), 1, 2, 16, 24),
    "alibi": (S.generate_alibi_bias(4), M.causal_mask, 2, 4, 48, 48),
    "softcap": (S.generate_tanh_softcap(20), M.causal_mask, 2, 2, 48, 48),
    "sandwich": (S.generate_sandwich_bias(4, 48, d_bar=16), None, 1, 4, 48, 48),
    "graphormer_spatial": (S.generate_graphormer_spatial_bias(torch.randn(2, 6, dtype=torch.float64), DIST), None,
                           1, 2, 24, 24),
    "graphormer_edge": (S.generate_graphormer_edge_bias(torch.randn(2, 3, 3, dtype=torch.float64), PATH_TYPES,
                                                       PATH_LEN),
                        None, 1, 2, 24, 24),
    "torch_or_masks": (None, or_masks(M.causal_mask, M.generate_prefix_lm_mask(8)), 1, 2, 32, 32),
}


# sandwich builds its tables in float32 inside the generator; flex multiplies them in float32,
# the reference in float64, so agreement is to float32 rounding of the bias.
FLOAT32_TABLES = {"sandwich": 1e-6}


def _double(t):
    return t.detach().double() if t.is_floating_point() else t


@pytest.mark.parametrize("name", sorted(CASES))
def test_attn_gym_mods_match_flex_eager(name):
    score_mod, mask_mod, B, H, Lq, Lk = CASES[name]
    variant = attnforge.compile(score_mod=score_mod, mask_mod=mask_mod)
    g = torch.Generator().manual_seed(1)
    q = torch.randn(B, H, Lq, 16, dtype=torch.float64, generator=g)
    k, v = (torch.randn(B, H, Lk, 16, dtype=torch.float64, generator=g) for _ in range(2))
    tensors = {n: _double(t) for n, t in variant.tensors.items()}
    out, lse = variant.reference(q, k, v, return_lse=True, **tensors)
    bm = None if mask_mod is None else create_block_mask(mask_mod, B, H, Lq, Lk, device="cpu")
    gold, gold_lse = flex_attention(q, k, v, score_mod=score_mod, block_mask=bm, return_lse=True)
    live = torch.isfinite(gold_lse)
    assert torch.equal(live, torch.isfinite(lse))
    tol = FLOAT32_TABLES.get(name, 1e-9)
    assert (out - gold).abs().max().item() < tol
    assert (lse - gold_lse)[live].abs().max().item() < tol
    assert (out[~live] == 0).all()


def test_captured_tensors_are_named_by_the_users_variables():
    v = attnforge.compile(mask_mod=M.generate_doc_mask_mod(M.causal_mask, OFFSETS))
    assert set(v.tensors) == {"document_id", "offsets"}
    assert "offsets[document_id[q_idx]]" in str(v.ir)
    edge = attnforge.compile(score_mod=CASES["graphormer_edge"][0])
    assert {"table", "table_1", "table_2", "path_lengths", "path_edge_types"} <= set(edge.tensors)


def _snippet_error(fn, **kw):
    with pytest.raises(DSLError) as info:
        attnforge.compile(**kw, mask_mod=fn) if "score_mod" not in kw else attnforge.compile(**kw)
    return str(info.value)


def _here(fn, marker: str) -> tuple[int, int]:
    import inspect

    lines, start = inspect.getsourcelines(fn)
    for i, line in enumerate(lines):
        if marker in line:
            return start + i, line.index(marker) + 1
    raise AssertionError(marker)


def test_if_on_traced_value_points_at_user_line():
    def bad(b, h, q_idx, kv_idx):
        if q_idx > kv_idx:
            return q_idx >= 0
        return kv_idx >= 0

    msg = _snippet_error(bad)
    line, col = _here(bad, "q_idx > kv_idx")
    assert f"test_trace.py:{line}:" in msg and "torch.where" in msg
    assert msg.splitlines()[1].strip() == "if q_idx > kv_idx:"
    assert int(msg.split(":")[2]) == col


def test_and_or_not_int_on_traced_values():
    def use_and(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) and (q_idx < 5)

    def use_int(b, h, q_idx, kv_idx):
        return q_idx >= int(kv_idx)

    def use_list(b, h, q_idx, kv_idx):
        return [True, False][q_idx] & (q_idx > 0)

    assert "`&`, `|`, `~`" in _snippet_error(use_and)
    assert "Python number" in _snippet_error(use_int)
    assert "Python number" in _snippet_error(use_list)
    line, _ = _here(use_int, "int(kv_idx)")
    assert f":{line}:" in _snippet_error(use_int)


def test_unsupported_torch_op_names_itself():
    def cum(score, b, h, q_idx, kv_idx):
        return torch.cumsum(score, 0)

    msg = _snippet_error(None, score_mod=cum)
    assert "unsupported: torch.cumsum" in msg


def test_mask_must_be_bool_and_tensors_indexed_fully():
    table = torch.zeros(4, 8)

    def not_bool(b, h, q_idx, kv_idx):
        return q_idx - kv_idx

    def partial(score, b, h, q_idx, kv_idx):
        return score + table[h]

    assert "expected bool" in _snippet_error(not_bool)
    assert "indexed with 1 of 2" in _snippet_error(None, score_mod=partial)


def test_mods_calling_mods_and_loops_over_constants():
    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def banded(b, h, q_idx, kv_idx):
        allowed = q_idx < 0
        for w in (1, 3, 7):  # a Python loop over constants unrolls at trace time
            allowed = allowed | (q_idx - kv_idx == w)
        return causal(b, h, q_idx, kv_idx) & allowed

    v = attnforge.compile(mask_mod=banded)
    q = k = vv = torch.randn(1, 1, 12, 4, dtype=torch.float64)
    out, lse = v.reference(q, k, vv, return_lse=True)
    assert torch.isneginf(lse[0, 0, 0])  # row 0 sees no key
    assert math.isfinite(lse[0, 0, 5].item())
