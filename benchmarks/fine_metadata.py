"""Block metadata in tiles of the kernels' own size (`configs.FINE_SPARSE_BLOCK`, 64) against the
variant's 128 x 128 metadata for every kernel, in one process with torch.compile(flex_attention):
forward and backward (bwd = (fwd+bwd) - fwd, each the least of two timings) and the largest
gradient difference between the two.

    python benchmarks/fine_metadata.py --shape 16,16,2048,128 --shape 4,16,8192,64 \
        --cases causal sliding1024 document8 document_random
"""
from __future__ import annotations

import argparse

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from attnforge import bench
from attnforge.bench import _time
from attnforge.runtime import launch


def _fwd_bwd(fn, inputs, do):
    def run():
        torch.autograd.grad(fn(), inputs, do)
    return run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", default=None, help="B,H,L,D (repeatable)")
    ap.add_argument("--cases", nargs="+", default=["causal", "sliding1024", "document8", "document_random"])
    args = ap.parse_args()
    for shape in args.shape or ["16,16,2048,128"]:
        B, H, L, D = map(int, shape.split(","))
        for case, var, q, k, v in bench.selected_cases(B, H, L, D, args.cases):
            do = torch.randn_like(q)
            gqa = q.shape[1] != k.shape[1]
            blk = create_block_mask(case.mask_mod, None, None, L, L, device="cuda") if case.mask_mod else None
            torch._dynamo.reset()
            flex = torch.compile(flex_attention)
            runs = {"flex": lambda: flex(q, k, v, score_mod=case.score_mod, block_mask=blk, enable_gqa=gqa),
                    "attnforge": lambda: var(q, k, v, enable_gqa=gqa)}
            fwd, bwd, grads = {}, {}, {}
            for _ in range(2):  # the two settings alternate: a slow window of the machine hits both
                for block in (128, 64):
                    launch.FINE_SPARSE_BLOCK = block
                    for name, fn in runs.items():
                        label = name if name == "flex" else f"{name} {block}"
                        if name != "flex":
                            grads[block] = torch.autograd.grad(fn(), (q, k, v), do)
                        t_fwd = _time(fn, True)
                        fwd[label] = min(t_fwd, fwd.get(label, 1e9))
                        bwd[label] = min(_time(_fwd_bwd(fn, (q, k, v), do), True) - t_fwd, bwd.get(label, 1e9))
            diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(grads[128], grads[64]))
            for what, times in (("fwd", fwd), ("bwd", bwd)):
                print(f"{case.name} {shape} {what}: " + "  ".join(
                    f"{n} {t:.3f} ms ({times['flex'] / t:.2f}x flex)" for n, t in times.items()), flush=True)
            print(f"  largest gradient difference between the two: {diff:.1e}")
    launch.FINE_SPARSE_BLOCK = 64


if __name__ == "__main__":
    main()
