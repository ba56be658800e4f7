"""Time every tile-config candidate of each kernel (the autotuner's own timings, kernel by kernel)
for some variants and shapes: the data behind the defaults in codegen/configs.py.

    python benchmarks/sweep.py --shape 16,16,2048,128 --variant causal --variant full
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

import attnforge
from attnforge.runtime import autotune

VARIANTS = {
    "full": "attention full() { }",
    "causal": "attention causal() { mask = q_idx >= kv_idx }",
    "softcap": "attention softcap() { score = 30.0 * tanh(score / 30.0)\n mask = q_idx >= kv_idx }",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", default=None, help="B,H,L,D (repeatable)")
    ap.add_argument("--variant", action="append", default=None, choices=sorted(VARIANTS))
    args = ap.parse_args()
    os.environ["ATTNFORGE_CACHE_DIR"] = tempfile.mkdtemp()  # tune afresh, leave no choices behind
    attnforge.autotune(True)
    for shape in args.shape or ["16,16,2048,128"]:
        B, H, L, D = map(int, shape.split(","))
        for name in args.variant or ["causal"]:
            v = attnforge.compile(VARIANTS[name])
            q, k, vv = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                        for _ in range(3))
            autotune.TIMINGS.clear()
            v(q, k, vv).backward(torch.randn_like(q))
            torch.cuda.synchronize()
            for key, times in autotune.TIMINGS.items():
                kind = key.split("|")[1]
                best = min(times, key=times.get)
                cells = "  ".join(f"{c}: {t:.3f}" for c, t in sorted(times.items(), key=lambda x: x[1]))
                print(f"{name:8} {shape:16} {kind:9} best {best:16} | {cells}", flush=True)


if __name__ == "__main__":
    main()
