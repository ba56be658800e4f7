"""Every example: reference == flex eager (float64), snippet IR == DSL IR, gradients are right."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge
from conftest import EXAMPLES

B, H, L = 2, 4, 256  # the examples' captured tensors and constants are sized for these


def _variants(mod):
    snippet = attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod)
    dsl = attnforge.compile(str(EXAMPLES / f"{mod.__name__.removeprefix('example_')}.attn"))
    return snippet, dsl


def _f64(tensors: dict, grad: bool = False) -> dict:
    out = {}
    for n, t in tensors.items():
        t = t.detach().double() if t.is_floating_point() else t
        out[n] = t.requires_grad_(grad) if t.is_floating_point() else t
    return out


def _qkv(D, dtype=torch.float64, seed=0, grad=False, Lq=L, Lk=L, Hkv=H):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, D, generator=g, dtype=dtype)
    k, v = (torch.randn(B, Hkv, Lk, D, generator=g, dtype=dtype) for _ in range(2))
    return tuple(t.requires_grad_(grad) for t in (q, k, v))


def test_reference_matches_flex_eager(example):
    name, mod = example
    snippet, dsl = _variants(mod)
    q, k, v = _qkv(32)
    tensors = _f64(snippet.tensors)
    bm = create_block_mask(mod.mask_mod, B, H, L, L, device="cpu") if mod.mask_mod else None
    gold, gold_lse = flex_attention(q, k, v, score_mod=mod.score_mod, block_mask=bm, return_lse=True)
    for variant in (snippet, dsl):
        out, lse = variant.reference(q, k, v, return_lse=True, **tensors)
        assert (out - gold).abs().max().item() < 1e-9, name
        assert (lse - gold_lse).abs().max().item() < 1e-9, name


def test_snippet_and_dsl_give_equal_ir(example):
    name, mod = example
    snippet, dsl = _variants(mod)
    a, b = snippet.lowered, dsl.lowered
    assert (a.selections, a.branches, a.combiner) == (b.selections, b.branches, b.combiner), name
    assert (a.block_rules, a.grads) == (b.block_rules, b.grads), name
    assert [(p.name, p.dtype) for p in a.params] == [(p.name, p.dtype) for p in b.params]


def test_gradcheck(example):
    name, mod = example
    _, dsl = _variants(mod)
    q, k, v = _qkv(8, grad=True)
    tensors = _f64(attnforge.compile(score_mod=mod.score_mod, mask_mod=mod.mask_mod).tensors, True)
    names = list(tensors)

    def fn(q, k, v, *extra):
        return dsl.reference(q, k, v, return_lse=True, **dict(zip(names, extra)), **{
            n: t for n, t in tensors.items() if not t.is_floating_point()})

    learn = [tensors[n] for n in names if tensors[n].is_floating_point()]
    names = [n for n in names if tensors[n].is_floating_point()]
    assert torch.autograd.gradcheck(fn, (q, k, v, *learn), fast_mode=True)


def _dense_independent(mod, q, k, v):
    """Attention written directly with the Python mods on broadcast index tensors (no IR)."""
    b = torch.arange(B).view(B, 1, 1, 1)
    h = torch.arange(H).view(1, H, 1, 1)
    qi = torch.arange(L).view(1, 1, L, 1)
    ki = torch.arange(L).view(1, 1, 1, L)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if mod.score_mod is not None:
        s = mod.score_mod(s, b, h, qi, ki)
    if mod.mask_mod is not None:
        s = torch.where(mod.mask_mod(b, h, qi, ki), s, -math.inf)
    return torch.softmax(s, dim=-1) @ v, torch.logsumexp(s, dim=-1)


def test_gradients_match_independent_dense_evaluation(example):
    name, mod = example
    snippet, _ = _variants(mod)
    grads = []
    for run in ("ours", "dense"):
        q, k, v = _qkv(16, grad=True, seed=3)
        learn = [t for t in snippet.tensors.values() if t.is_floating_point()]
        for t in learn:
            t.grad = None
        if run == "ours":
            out, lse = snippet.reference(q, k, v, return_lse=True)
        else:
            out, lse = _dense_independent(mod, q, k, v)
        g = torch.Generator().manual_seed(5)
        loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() + \
            (lse * torch.randn(lse.shape, generator=g, dtype=lse.dtype)).sum()
        loss.backward()
        grads.append([q.grad, k.grad, v.grad] + [t.grad.clone() for t in learn])
    for ours, dense in zip(*grads):
        assert torch.allclose(ours.double(), dense.double(), atol=1e-5), name


def test_fully_masked_rows_give_zero_and_neg_inf_without_nan():
    v = attnforge.compile("attention strict() { mask = kv_idx < q_idx }")
    q, k, vv = _qkv(16, grad=True)
    out, lse = v.reference(q, k, vv, return_lse=True)
    assert (out[:, :, 0] == 0).all() and torch.isneginf(lse[:, :, 0]).all()
    (out.sum() + lse[:, :, 1:].sum()).backward()
    for t in (q, k, vv):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[:, :, 0] == 0).all()


@pytest.mark.parametrize("Lq,Lk,Hkv", [(77, 200, 4), (200, 77, 1), (130, 130, 2)],
                         ids=["Lq77-Lk200", "Lq200-Lk77-gqa4", "L130-gqa2"])
def test_odd_shapes_and_gqa_match_flex_eager(Lq, Lk, Hkv):
    mod = EXAMPLES / "alibi.py"
    assert mod.exists()

    def alibi(score, b, h, q_idx, kv_idx):
        return score + (kv_idx - q_idx) * torch.exp2(-((h + 1) * 8.0 / H))

    def window(b, h, q_idx, kv_idx):
        return (q_idx - kv_idx).abs() < 40

    q, k, v = _qkv(24, Lq=Lq, Lk=Lk, Hkv=Hkv)
    out, lse = attnforge.attention(q, k, v, alibi, window, enable_gqa=Hkv != H, return_lse=True)
    bm = create_block_mask(window, B, H, Lq, Lk, device="cpu")
    gold, gold_lse = flex_attention(q, k, v, score_mod=alibi, block_mask=bm, return_lse=True,
                                    enable_gqa=Hkv != H)
    live = torch.isfinite(gold_lse)
    assert torch.equal(live, torch.isfinite(lse))
    assert (out - gold).abs().max() < 1e-9 and (lse - gold_lse)[live].abs().max() < 1e-9


def test_example_scripts_run():
    out = subprocess.run([sys.executable, str(EXAMPLES / "causal.py")], capture_output=True,
                         text=True, cwd=EXAMPLES, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "max |out - float64 reference|" in out.stdout
