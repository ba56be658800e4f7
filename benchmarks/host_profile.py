"""Where the host time of a call goes: for one case of `attnforge bench`, the time to issue 200
forwards and 200 forwards + backwards without waiting (against the wall time, which includes the
GPU's), then cProfile over 200 forwards + backwards, by own time and by cumulative time. Where the
host time per call exceeds the GPU's, a benchmark of that case measures the host.

    python benchmarks/host_profile.py --shape 4,16,8192,64 --case document8
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import torch

from attnforge import bench


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4,16,8192,64", help="B,H,L,D")
    ap.add_argument("--case", default="document8")
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--profile", choices=("fwd", "fwd+bwd"), default="fwd+bwd", help="what cProfile runs")
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    (case, var, q, k, v), = bench.selected_cases(B, H, L, D, [args.case])
    do = torch.randn_like(q)

    def fwd_bwd():
        q.grad = k.grad = v.grad = None
        var(q, k, v).backward(do)

    for _ in range(20):  # compiles, metadata, the backward's first call
        fwd_bwd()
    torch.cuda.synchronize()
    calls = {"fwd": lambda: var(q, k, v), "fwd+bwd": fwd_bwd}
    for name, fn in calls.items():
        t0 = time.perf_counter()
        for _ in range(args.calls):
            fn()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        print(f"{case.name} {args.shape} {name}: host {(t1 - t0) / args.calls * 1e3:.3f} ms/call, "
              f"wall {(t2 - t0) / args.calls * 1e3:.3f}", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(args.calls):
        calls[args.profile]()
    prof.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)
    stats.sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
