"""Shared driver for the examples: run a variant on small random tensors and check it densely."""
from __future__ import annotations

import torch

import attnforge

B, H, L, D = 2, 4, 256, 32


def run(variant: attnforge.Variant, dtype=torch.float32, **tensors) -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, H, L, D, generator=g, dtype=dtype) for _ in range(3))
    out, lse = variant(q, k, v, return_lse=True, **tensors)
    gold, gold_lse = variant.reference(q.double(), k.double(), v.double(), return_lse=True,
                                       **{n: t.double() if t.is_floating_point() else t
                                          for n, t in {**variant.tensors, **tensors}.items()})
    err = (out.double() - gold).abs().max().item()
    print(variant.ir)
    print(f"{variant.program.name}: out {tuple(out.shape)}, max |out - float64 reference| = {err:.2e}, "
          f"rows fully masked: {int(torch.isneginf(lse).sum())}")
