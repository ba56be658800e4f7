"""Time the sm_90 Gluon forward's schedule options (ping-pong between the consumer warp groups,
pipeline stages, consumer registers) against attnforge's Triton forward and
torch.compile(flex_attention), in one process:

    python benchmarks/sm90_options.py --shape 4,16,8192,128 --shape 16,16,2048,128
"""
from __future__ import annotations

import argparse
import itertools

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge
from attnforge.bench import _time
from attnforge.codegen.configs import SM90_FWD, TileConfig, tile_config
from attnforge.runtime import launch, ops

CASES = {"full": None, "causal": lambda b, h, q, k: q >= k}


def run(variant, q, k, v, cfg: TileConfig):
    kern, named, bm = ops._prepare(variant._key, q, k, v, [])
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    launch.launch(kern, launch.fwd_call(kern, q, k, v, out, lse, named, q.shape[-1] ** -0.5, bm, cfg))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", default=None, help="B,H,L,D (repeatable)")
    ap.add_argument("--pingpong", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--regs", type=int, nargs="+", default=[232, 240])
    args = ap.parse_args()
    for shape in args.shape or ["4,16,8192,128"]:
        B, H, L, D = map(int, shape.split(","))
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for name, mask in CASES.items():
            variant = attnforge.compile(mask_mod=mask) if mask else attnforge.compile("attention full() { }")
            flops = 4 * B * H * L * L * D * (0.5 if mask else 1.0)
            blk = create_block_mask(mask, B, H, L, L, device="cuda") if mask else None
            flex = torch.compile(flex_attention)
            gold = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=mask is not None)
            res = {"flex": _time(lambda: flex(q, k, v, block_mask=blk), True),
                   "triton": _time(lambda: run(variant, q, k, v, tile_config("fwd", D)), True)}
            for pp, stages, regs in itertools.product(args.pingpong, args.stages, args.regs):
                launch.SM90_PINGPONG, launch.SM90_CONSUMER_REGS = bool(pp), regs
                cfg = TileConfig(SM90_FWD.block_m, SM90_FWD.block_n, SM90_FWD.num_warps, stages, True, True)
                err = (run(variant, q, k, v, cfg).float() - gold.float()).abs().max().item()
                label = f"pingpong={int(pp)} s{stages} r{regs}"
                res[label] = _time(lambda: run(variant, q, k, v, cfg), True)
                print(f"  {name} {shape} {label}: {res[label]:.3f} ms (max err vs SDPA {err:.1e})", flush=True)
            print(f"{name} {shape}: " + "  ".join(f"{n} {t:.3f} ms {flops / t / 1e9:.0f} TF/s {res['flex'] / t:.2f}x"
                                                  for n, t in res.items()), flush=True)


if __name__ == "__main__":
    main()
