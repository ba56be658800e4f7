"""Time the sm_90 Gluon forward's schedule options (ping-pong between the consumer warp groups,
pipeline stages, consumer registers, key-tile size, the scale's fold into the exponent's FMA) against
attnforge's Triton forward (its default tile) and torch.compile(flex_attention), in one process, on
cases of `attnforge bench`:

    python benchmarks/sm90_options.py --shape 4,16,8192,128 --shape 16,16,2048,128 --cases full document8
"""
from __future__ import annotations

import argparse
import itertools

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge
from attnforge import bench
from attnforge.bench import _time
from attnforge.codegen import configs
from attnforge.codegen.configs import TileConfig, sm90_config, tile_config
from attnforge.runtime import launch, ops



def run(variant, q, k, v, cfg: TileConfig):
    captured = [variant.tensors[n] for n in ops._VARIANTS[variant._key].params]
    kern, named, bm = ops._prepare(variant._key, q, k, v, captured)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    call = launch.fwd_call(kern, q, k, v, out, lse, named, q.shape[-1] ** -0.5, bm, cfg)
    if call.kind == "fwd_sm90" and FOLD is not None:
        call.constexprs["SCALE_POS"] = FOLD
    launch.launch(kern, call)
    return out


FOLD = None  # --fold: the scale in the exponent's FMA (1) or applied before the row max (0)


def main():
    global FOLD
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", default=None, help="B,H,L,D (repeatable)")
    ap.add_argument("--pingpong", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--stages", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--regs", type=int, nargs="+", default=[0],
                    help="setmaxnreg of the consumer groups (0: derived from the launch registers)")
    ap.add_argument("--block-n", type=int, nargs="+", default=[128], help="keys per tile (64 or 128)")
    ap.add_argument("--fold", type=int, nargs="+", default=[1], help="scale folded into the exponent's FMA (0/1)")
    ap.add_argument("--maxnreg", type=int, nargs="+", default=[0],
                    help="registers per thread at launch (TileConfig.maxnreg; 0: the compiler's, one program "
                         "per SM): 80 fits two 12-warp programs (--regs then derived) or three 8-warp ones")
    ap.add_argument("--block-m", type=int, nargs="+", default=[128],
                    help="query rows per program: 64, 128 or 192 (one, two or three consumer warp groups)")
    ap.add_argument("--cases", nargs="+", default=["full", "causal"], help="cases of attnforge.bench")
    args = ap.parse_args()
    for shape in args.shape or ["4,16,8192,128"]:
        B, H, L, D = map(int, shape.split(","))
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for case in bench.cases(B, H, L):
            if case.name not in args.cases or case.heads:
                continue
            name, mask = case.name, case.mask_mod
            variant = bench.case_inputs(case, 1, 1, 16, D)[0]
            flops = 4 * B * H * L * L * D * bench.density(mask, L)
            blk = create_block_mask(mask, None, None, L, L, device="cuda") if mask else None
            torch._dynamo.reset()  # a static compile per case (a second shape would compile a dynamic one)
            flex = torch.compile(flex_attention)
            gold = run(variant, q, k, v, tile_config("fwd", D))
            try:
                res = {"flex": _time(lambda: flex(q, k, v, score_mod=case.score_mod, block_mask=blk), True)}
            except Exception as e:  # noqa: BLE001 - flex's default tiles may not fit (a learnable bias)
                print(f"  {name} {shape} flex: {type(e).__name__} {str(e)[:120]}", flush=True)
                res = {"flex": float("nan")}
            res["triton"] = _time(lambda: run(variant, q, k, v, tile_config("fwd", D)), True)
            base = sm90_config(D)
            grid = itertools.product(args.pingpong, args.stages, args.regs, args.block_n, args.fold, args.maxnreg,
                                     args.block_m)
            for pp, stages, regs, bn, fold, maxnreg, bm in grid:
                if (maxnreg and regs != args.regs[0]) or (bm == 64 and pp):
                    continue  # (regs are derived from maxnreg; one group has no partner to take turns with)
                FOLD = bool(fold)
                configs.SM90_CONSUMER_REGS = regs or None
                configs.SM90_PINGPONG = dict.fromkeys(configs.SM90_PINGPONG, bool(pp))
                cfg = TileConfig(bm, bn, base.num_warps, stages, True, True, maxnreg)
                label = (f"m{bm} n{bn} s{stages} pingpong={int(pp)} fold{fold} "
                         + (f"maxnreg{maxnreg}" if maxnreg else f"r{regs or 'auto'}"))
                try:
                    err = (run(variant, q, k, v, cfg).float() - gold.float()).abs().max().item()
                except Exception as e:  # noqa: BLE001 - a config that does not compile (registers, shared memory)
                    print(f"  {name} {shape} {label}: {type(e).__name__} {str(e)[-200:]}", flush=True)
                    continue
                res[label] = _time(lambda: run(variant, q, k, v, cfg), True)
                print(f"  {name} {shape} {label}: {res[label]:.3f} ms (max diff vs the Triton forward {err:.1e})", flush=True)
            print(f"{name} {shape}: " + "  ".join(f"{n} {t:.3f} ms {flops / t / 1e9:.0f} TF/s {res['flex'] / t:.2f}x"
                                                  for n, t in res.items()), flush=True)


if __name__ == "__main__":
    main()
