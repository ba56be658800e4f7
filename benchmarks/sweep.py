"""Sweep tile configs for one variant/shape and print each kernel's time: the data behind
codegen/configs.py. python benchmarks/sweep.py --shape 2,8,4096,128"""
from __future__ import annotations

import argparse

import torch
import triton

import attnforge
from attnforge.codegen import configs
from attnforge.codegen.configs import TileConfig

CANDIDATES = {
    "fwd": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 64, 8, 2), (128, 128, 8, 2), (64, 64, 4, 3),
            (128, 32, 4, 3), (64, 128, 4, 2)],
    "bwd_dkdv": [(32, 64, 4, 2), (64, 64, 4, 2), (32, 128, 4, 2), (64, 128, 8, 2), (32, 64, 4, 3),
                 (64, 64, 8, 3), (16, 128, 4, 2)],
    "bwd_dq": [(64, 32, 4, 2), (64, 64, 4, 2), (128, 64, 8, 2), (128, 32, 4, 3), (64, 32, 4, 3),
               (128, 64, 4, 2)],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="2,8,4096,128")
    ap.add_argument("--src", default="attention causal() { mask = q_idx >= kv_idx }")
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    v = attnforge.compile(args.src)
    q, k, vv = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3))
    do = torch.randn_like(q)
    for kind, cands in CANDIDATES.items():
        base = list(configs.CONFIGS[kind])
        for c in cands:
            configs.CONFIGS[kind] = [(256, TileConfig(*c))]
            try:
                if kind == "fwd":
                    t = triton.testing.do_bench(lambda: v(q, k, vv), return_mode="median")
                else:
                    t = triton.testing.do_bench(lambda: v(q, k, vv).backward(do),
                                                return_mode="median")
            except Exception as err:  # noqa: BLE001 - a config that does not fit is reported
                print(f"{kind:9} {c} failed: {type(err).__name__}: {str(err)[:80]}")
                continue
            print(f"{kind:9} BLOCK_M={c[0]:3} BLOCK_N={c[1]:3} warps={c[2]} stages={c[3]}  "
                  f"{t:.3f} ms", flush=True)
        configs.CONFIGS[kind] = base


if __name__ == "__main__":
    main()
