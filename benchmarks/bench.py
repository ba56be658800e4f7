"""attnforge vs torch.compile(flex_attention) vs SDPA, in one process, forward and forward+backward.

    python benchmarks/bench.py --case causal --shape 2,8,4096,128

Times are medians of CUDA-event timings after warm-up (triton.testing.do_bench); TFLOP/s count
only unmasked work (density from the block-free dense mask fraction)."""
from __future__ import annotations

import argparse
import math

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge

CASES = {
    "causal": ("attention causal() { mask = q_idx >= kv_idx }", lambda b, h, q, k: q >= k, True),
    "full": ("attention full() { }", None, False),
}


def _density(mask_mod, L) -> float:
    if mask_mod is None:
        return 1.0
    i = torch.arange(L)
    return mask_mod(0, 0, i[:, None], i[None, :]).float().mean().item()


def bench(case: str, B: int, H: int, L: int, D: int) -> list[tuple]:
    src, mask_mod, causal = CASES[case]
    variant = attnforge.compile(src)
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    do = torch.randn_like(q)
    flex = torch.compile(flex_attention)
    bm = create_block_mask(mask_mod, B, H, L, L, device="cuda") if mask_mod else None
    runs = {
        "attnforge": lambda: variant(q, k, v),
        "flex": lambda: flex(q, k, v, block_mask=bm),
    }
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        runs["sdpa_flash"] = lambda: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=causal)
    flops = 4 * B * H * L * L * D * _density(mask_mod, L)
    rows = []
    for name, fn in runs.items():
        def fwd():
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return fn()

        def fwd_bwd():
            q.grad = k.grad = v.grad = None
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                fn().backward(do)

        t_f = triton.testing.do_bench(fwd, warmup=100, rep=400, return_mode="median")
        t_fb = triton.testing.do_bench(fwd_bwd, warmup=100, rep=400, return_mode="median")
        t_b = t_fb - t_f
        rows.append((name, t_f, t_b, flops / t_f / 1e9, 2.5 * flops / t_b / 1e9))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="causal", choices=sorted(CASES))
    ap.add_argument("--shape", default="2,8,4096,128")
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    rows = bench(args.case, B, H, L, D)
    flex = {r[0]: r for r in rows}["flex"]
    print(f"{args.case} B={B} H={H} L={L} D={D} bf16  torch {torch.__version__} triton "
          f"{triton.__version__} {torch.cuda.get_device_name()}")
    print(f"{'impl':12} {'fwd ms':>8} {'bwd ms':>8} {'fwd TF/s':>9} {'bwd TF/s':>9} "
          f"{'fwd/flex':>9} {'bwd/flex':>9}")
    for name, tf, tb, ff, fb in rows:
        print(f"{name:12} {tf:8.3f} {tb:8.3f} {ff:9.1f} {fb:9.1f} {flex[1] / tf:9.2f} "
              f"{flex[2] / tb:9.2f}")


if __name__ == "__main__":
    main()
