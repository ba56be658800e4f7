"""Per-kernel GPU time of the backward (attnforge's kernels: dK/dV and dQ in one launch and in two;
torch.compile(flex_attention)'s), from torch.profiler, for bench cases at one shape:

    python benchmarks/profile_bwd.py --shape 16,16,2048,128 --cases full causal document8
"""
from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.profiler import ProfilerActivity, profile

from attnforge import bench
from attnforge.runtime import launch

REPS = 10


def kernel_times(fn) -> dict[str, float]:
    """Mean GPU ms per call of each kernel `fn` launches (REPS calls after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPS):
            fn()
        torch.cuda.synchronize()
    times: dict[str, float] = defaultdict(float)
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            times[e.name[:60]] += e.device_time_total / 1e3 / REPS
    return dict(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,16,2048,128")
    ap.add_argument("--cases", nargs="*", default=["full", "causal", "document8"])
    args = ap.parse_args()
    B, H, L, D = map(int, args.shape.split(","))
    for case, variant, q, k, v in bench.selected_cases(B, H, L, D, args.cases):
        gqa = q.shape[1] != k.shape[1]
        do = torch.randn_like(q)
        flex_ok = False
        torch._dynamo.reset()
        flex = torch.compile(flex_attention)
        bm = create_block_mask(case.mask_mod, None, None, L, L, device="cuda") if case.mask_mod else None
        inputs = [q, k, v, *case.learnable.values()]  # a learnable bias's gradient too
        flex_fns = [lambda o=o: flex(q, k, v, score_mod=case.score_mod, block_mask=bm, enable_gqa=gqa,
                                     kernel_options=o) for o in (None, *bench.FLEX_FALLBACKS)]
        for name, f in (("attnforge one launch", lambda: variant(q, k, v, enable_gqa=gqa)),
                        ("attnforge two launches", lambda: variant(q, k, v, enable_gqa=gqa)),
                        *((f"flex {o or ''}", fn) for o, fn in zip((None, *bench.FLEX_FALLBACKS), flex_fns))):
            if name.startswith("flex {") and flex_ok:
                continue  # flex's default tiles ran: no fallback
            launch.FUSED_BWD = name != "attnforge two launches"
            try:
                out = f()
                times = kernel_times(lambda: torch.autograd.grad(out, inputs, do, retain_graph=True))
                wall = bench._time(lambda: torch.autograd.grad(out, inputs, do, retain_graph=True), True)
            except Exception as err:  # noqa: BLE001 - flex cannot compile some cases' backward
                print(f"{case.name} {args.shape} {name}: {type(err).__name__}: {str(err)[:120]}")
                flex_ok = False if name == "flex " else flex_ok
                continue
            flex_ok = True if name == "flex " else flex_ok
            total = sum(times.values())
            print(f"{case.name} {args.shape} {name} backward: {total:.3f} ms of kernels, {wall:.3f} ms timed")
            for kname, t in sorted(times.items(), key=lambda kv: -kv[1]):
                print(f"    {t:7.3f} ms  {kname}")


if __name__ == "__main__":
    main()
