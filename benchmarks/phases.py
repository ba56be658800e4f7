"""Event-timed phases of one case's forward+backward step, attnforge vs torch.compile(flex_attention),
beside the bench's own measure (fwd+bwd minus fwd, `attnforge.bench._time`); with --syncs, first check
that a steady-state attnforge step makes no synchronizing call (torch.cuda.set_sync_debug_mode).

    python benchmarks/phases.py --shape 16,16,2048,128 --case full --syncs
"""
from __future__ import annotations

import argparse

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from attnforge.bench import _time, case_inputs, cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,16,2048,128", help="B,H,L,D")
    ap.add_argument("--case", default="full")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--syncs", action="store_true", help="fail on a synchronizing call in attnforge's step")
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    case = next(c for c in cases(B, H, L) if c.name == args.case)
    v, q, k, vv = case_inputs(case, B, H, L, D)
    gqa = q.shape[1] != k.shape[1]
    do = torch.randn_like(q)
    blk = create_block_mask(case.mask_mod, None, None, L, L, device="cuda") if case.mask_mod else None
    flex = torch.compile(flex_attention)
    impls = {"attnforge": lambda: v(q, k, vv, enable_gqa=gqa),
             "flex": lambda: flex(q, k, vv, score_mod=case.score_mod, block_mask=blk, enable_gqa=gqa)}
    flush = torch.empty(256 * 2 ** 20 // 4, dtype=torch.int32, device="cuda")
    for name, fn in impls.items():
        def step(fn=fn):
            q.grad = k.grad = vv.grad = None
            for t in case.learnable.values():
                t.grad = None
            fn().backward(do)
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        if args.syncs and name == "attnforge":
            torch.cuda.set_sync_debug_mode("error")  # raises on a synchronizing call
            step()
            torch.cuda.set_sync_debug_mode(0)
            print("attnforge: no synchronizing call in a steady-state step")
        n = args.steps
        ev = [[torch.cuda.Event(enable_timing=True) for _ in range(3)] for _ in range(n)]
        for e in ev:
            flush.zero_()
            q.grad = k.grad = vv.grad = None
            e[0].record()
            out = fn()
            e[1].record()
            out.backward(do)
            e[2].record()
        torch.cuda.synchronize()

        def median(a, b):
            return sorted(e[a].elapsed_time(e[b]) for e in ev)[n // 2]

        print(f"{name:10} {args.shape} {case.name}: events fwd {median(0, 1):.3f} bwd {median(1, 2):.3f} "
              f"step {median(0, 2):.3f} ms | bench's fwd {_time(fn, True):.3f} step {_time(step, True):.3f} ms")


if __name__ == "__main__":
    main()
