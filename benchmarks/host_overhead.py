"""Host time of a call against its GPU time: for cases of `attnforge bench`, the time to issue a call
(200 calls without waiting), the kernels' time (torch.profiler) and `triton.testing.do_bench`'s
reading, without autograd, with it (forward only) and forward + backward. Where the host time exceeds the kernels', a benchmark measures
the host: short kernels (document masks at L=2048) need a short host path.

    python benchmarks/host_overhead.py --shape 16,16,2048,128 --cases document8 document_random causal
"""
from __future__ import annotations

import argparse
import time

import torch
import triton
from torch.profiler import ProfilerActivity, profile

from attnforge import bench


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,16,2048,128", help="B,H,L,D")
    ap.add_argument("--cases", nargs="+", default=["document8", "document_random", "causal"])
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    for case, var, q, k, v in bench.selected_cases(B, H, L, D, args.cases):
        gqa = q.shape[1] != k.shape[1]

        def fn():
            return var(q, k, v, enable_gqa=gqa)

        do = torch.randn_like(q)

        def fwd_bwd():
            q.grad = k.grad = v.grad = None
            fn().backward(do)

        fwd_bwd()  # compiles everything first
        torch.cuda.synchronize()
        for mode, ctx, call in (("no grad", torch.no_grad, fn), ("grad", torch.enable_grad, fn),
                                ("fwd+bwd", torch.enable_grad, fwd_bwd)):
            with ctx():
                for _ in range(10):
                    call()
                torch.cuda.synchronize()
                t = time.perf_counter()
                for _ in range(args.calls):
                    call()
                issue = (time.perf_counter() - t) / args.calls * 1e3
                torch.cuda.synchronize()
                wall = (time.perf_counter() - t) / args.calls * 1e3
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(50):
                        call()
                    torch.cuda.synchronize()
                kernels = sum(e.device_time_total for e in prof.key_averages()) / 50 / 1e3
                timed = triton.testing.do_bench(call, warmup=25, rep=100, return_mode="median")
            print(f"{case.name} {args.shape} {mode}: host {issue:.3f} ms/call, wall {wall:.3f}, "
                  f"kernels {kernels:.3f}, do_bench {timed:.3f}", flush=True)


if __name__ == "__main__":
    main()
