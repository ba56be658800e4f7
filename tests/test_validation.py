"""Bad tensors raise ValueError naming the argument and what was expected."""
from __future__ import annotations

import pytest
import torch

import attnforge

B, H, L, D = 1, 4, 16, 8


def _qkv(**over):
    t = {"q": torch.randn(B, H, L, D), "k": torch.randn(B, H, L, D), "v": torch.randn(B, H, L, D)}
    t.update(over)
    return t["q"], t["k"], t["v"]


CAUSAL = attnforge.compile("attention c() { mask = q_idx >= kv_idx }")
DOC = attnforge.compile("attention d(doc: i32[L], bias: f32[H]) {\n"
                        "  score = score + bias[h]\n  mask = doc[q_idx] == doc[kv_idx]\n}")
DOC_OK = {"doc": torch.zeros(L, dtype=torch.int32), "bias": torch.zeros(H)}

CASES = [
    ("q 3-D", CAUSAL, _qkv(q=torch.randn(H, L, D)), {}, {}, r"q: expected a 4-D tensor"),
    ("k dtype", CAUSAL, _qkv(k=torch.randn(B, H, L, D, dtype=torch.float64)), {}, {},
     r"k: expected the same dtype as q, got torch.float64"),
    ("int q", CAUSAL, _qkv(q=torch.ones(B, H, L, D, dtype=torch.int64)), {}, {},
     r"q: expected a floating dtype"),
    ("batch", CAUSAL, _qkv(k=torch.randn(2, H, L, D), v=torch.randn(2, H, L, D)), {}, {},
     r"k: expected batch size B equal to q's, got 2"),
    ("head dim", CAUSAL, _qkv(k=torch.randn(B, H, L, 4)), {}, {}, r"k: expected head dim D"),
    ("v shape", CAUSAL, _qkv(v=torch.randn(B, H, L + 1, D)), {}, {}, r"v: expected shape \[B, Hkv, Lk, Dv\]"),
    ("gqa not multiple", CAUSAL, _qkv(k=torch.randn(B, 3, L, D), v=torch.randn(B, 3, L, D)),
     {"enable_gqa": True}, {}, r"q: expected Hq a multiple of k's Hkv, got Hq=4, Hkv=3"),
    ("gqa flag", CAUSAL, _qkv(k=torch.randn(B, 2, L, D), v=torch.randn(B, 2, L, D)), {}, {},
     r"enable_gqa: expected True when Hq != Hkv"),
    ("missing tensor", DOC, _qkv(), {}, {"bias": torch.zeros(H)},
     r"doc: missing captured tensor; expected an integer tensor of shape \[L\]"),
    ("float doc", DOC, _qkv(), {}, {**DOC_OK, "doc": torch.zeros(L)},
     r"doc: expected an integer tensor \(i32\), got torch.float32"),
    ("doc length", DOC, _qkv(), {}, {**DOC_OK, "doc": torch.zeros(L + 3, dtype=torch.int32)},
     r"doc: expected shape \[L\] \(dimension 0 = 16\), got \(19,\)"),
    ("bias rank", DOC, _qkv(), {}, {**DOC_OK, "bias": torch.zeros(H, 2)},
     r"bias: expected shape \[H\], got \(4, 2\)"),
    ("unknown tensor", DOC, _qkv(), {}, {**DOC_OK, "extra": torch.zeros(1)},
     r"extra: unknown tensor argument"),
    ("not a tensor", DOC, _qkv(), {}, {**DOC_OK, "bias": [0.0] * H}, r"bias: expected a torch.Tensor"),
]


@pytest.mark.parametrize("name,variant,qkv,kw,tensors,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_inputs_raise_value_error(name, variant, qkv, kw, tensors, pattern):
    with pytest.raises(ValueError, match=pattern):
        variant(*qkv, **kw, **tensors)


def test_out_of_range_index_names_the_tensor():
    fixed = attnforge.compile("attention d(doc: i32[16]) { mask = doc[q_idx] == doc[kv_idx] }")
    with pytest.raises(ValueError, match=r"`doc` is indexed out of range in dimension 0"):
        fixed.reference(*_qkv(q=torch.randn(B, H, L + 4, D)), doc=torch.zeros(16, dtype=torch.int32))
    # the kernels clamp indices into the tensor instead of reading out of bounds
    out = fixed(*_qkv(q=torch.randn(B, H, L + 4, D)), doc=torch.zeros(16, dtype=torch.int32))
    assert torch.isfinite(out).all()


def test_compile_argument_errors():
    with pytest.raises(ValueError, match="src: no such .attn file"):
        attnforge.compile("missing.attn")
    with pytest.raises(ValueError, match="constants apply to DSL sources only"):
        attnforge.compile(mask_mod=lambda b, h, q, k: q >= k, WINDOW=3)
    with pytest.raises(ValueError, match="mask_mods: expected one or more callables"):
        attnforge.and_masks(3)


def test_good_inputs_run():
    out = DOC(*_qkv(), **DOC_OK)
    assert out.shape == (B, H, L, D) and torch.isfinite(out).all()


def test_inputs_that_passed_are_not_checked_again_and_others_still_are():
    """A variant remembers the signatures (types, shapes, dtypes, devices) of inputs that passed; a
    bad input after good ones, in every case above, still raises."""
    variant = attnforge.compile("attention d(doc: i32[L], bias: f32[H]) {\n"
                                "  score = score + bias[h]\n  mask = doc[q_idx] == doc[kv_idx]\n}")
    variant.reference(*_qkv(), **DOC_OK)
    assert len(variant._passed) == 1
    variant.reference(*_qkv(), **DOC_OK)  # same signature: nothing new
    assert len(variant._passed) == 1
    for name, v, qkv, kw, tensors, pattern in CASES:
        if v is DOC:
            with pytest.raises(ValueError, match=pattern):
                variant.reference(*qkv, **kw, **tensors)
    assert len(variant._passed) == 1
