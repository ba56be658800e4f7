"""Nsight Compute evidence for a bench case: pipe utilizations, occupancy and L2 traffic of attnforge's
forward or backward kernel against torch.compile(flex_attention)'s, and where the warps stall (warp
state sampling, summed per SASS opcode and stall reason).

    python benchmarks/ncu_profile.py --shape 16,16,2048,128 --case document8 --pass bwd
    python benchmarks/ncu_profile.py --shape 4,16,8192,64 --case full --pass fwd --stalls --who attnforge

Needs `ncu` on the PATH (it runs this script again under ncu, one kernel launch after a warm-up).
"""
from __future__ import annotations

import argparse
import collections
import csv
import io
import re
import subprocess
import sys

METRICS = ["gpu__time_duration.sum", "launch__grid_size", "launch__block_size", "launch__registers_per_thread",
           "launch__occupancy_limit_registers", "launch__occupancy_limit_shared_mem",
           "sm__warps_active.avg.pct_of_peak_sustained_active",
           "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
           "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active",
           "sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active",
           "sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active",
           "sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active",
           "smsp__issue_active.avg.pct_of_peak_sustained_active", "lts__t_sectors.sum",
           "dram__throughput.avg.pct_of_peak_sustained_elapsed"]
# kernel names: attnforge's forward (Gluon or Triton) and one-launch backward; flex's (inductor) templates
KERNELS = {("attnforge", "fwd"): "regex:^attn_fwd$", ("attnforge", "bwd"): "regex:^attn_bwd$",
           ("flex", "fwd"): "regex:flex_attention(?!_backward)",
           # its backward template (`triton_tem_...`), not the preprocessing reduction (`triton_per_...`)
           ("flex", "bwd"): "regex:triton_tem_fused_flex_attention_backward"}


def target(shape: str, case_name: str, who: str, which: str) -> None:
    """The profiled process: a few forward (and backward) calls of one case."""
    import torch
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from attnforge import bench

    B, H, L, D = map(int, shape.split(","))
    case, var, q, k, v = next(bench.selected_cases(B, H, L, D, [case_name]))
    gqa = q.shape[1] != k.shape[1]
    if who == "flex":
        blk = create_block_mask(case.mask_mod, None, None, L, L, device="cuda") if case.mask_mod else None
        flex = torch.compile(flex_attention)
        fn = lambda: flex(q, k, v, score_mod=case.score_mod, block_mask=blk, enable_gqa=gqa)  # noqa: E731
    else:
        fn = lambda: var(q, k, v, enable_gqa=gqa)  # noqa: E731
    do = torch.randn_like(q)
    for _ in range(3):
        out = fn()
        if which == "bwd":
            out.backward(do)
    torch.cuda.synchronize()


def stalls_by_opcode(source_csv: str, top: int = 12) -> list[str]:
    """Warp-state samples per SASS opcode (share of all samples) with its three main stall reasons,
    from `ncu --page source --csv --print-source sass`."""
    rows = list(csv.reader(io.StringIO(source_csv[source_csv.index('"Address","Source"'):])))
    head = rows[0]
    total_col = head.index("Warp Stall Sampling (All Samples)")
    reasons = [i for i, h in enumerate(head) if h.startswith("stall_") and "Not Issued" not in h]
    per_op: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    samples: collections.Counter = collections.Counter()
    for r in rows[1:]:
        if len(r) < len(head) or not r[0].startswith("0x") or not r[1].strip():
            continue
        op = re.sub(r"^@!?U?P\w+\s+", "", r[1].strip()).split()[0]
        samples[op] += int(r[total_col].replace(",", "") or 0)
        for i in reasons:
            per_op[op][head[i][len("stall_"):]] += int(float(r[i].replace(",", "") or 0))
    total = sum(samples.values()) or 1
    return [f"{op:28s} {n / total * 100:5.1f}%  " + ", ".join(f"{k} {v}" for k, v in per_op[op].most_common(3))
            for op, n in samples.most_common(top)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="16,16,2048,128", help="B,H,L,D")
    ap.add_argument("--case", default="document8")
    ap.add_argument("--pass", dest="which", choices=["fwd", "bwd"], default="bwd")
    ap.add_argument("--who", nargs="+", default=["attnforge", "flex"], choices=["attnforge", "flex"])
    ap.add_argument("--stalls", action="store_true", help="warp-state samples per SASS opcode as well")
    ap.add_argument("--target", nargs=2, metavar=("WHO", "PASS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.target:
        return target(args.shape, args.case, *args.target)
    for who in args.who:
        me = [sys.executable, __file__, "--shape", args.shape, "--case", args.case, "--target", who, args.which]
        # skip the warm-up's launches: the third call's kernel (a backward follows each forward)
        base = ["ncu", "-k", KERNELS[who, args.which], "-c", "1", "--launch-skip", "2"]
        out = subprocess.run(base + ["--metrics", ",".join(METRICS)] + me, capture_output=True, text=True).stdout
        print(f"== {who} {args.which} {args.case} {args.shape}")
        print("\n".join(line for line in out.splitlines()
                        if any(m in line for m in METRICS) or "(" in line and "Context" in line))
        if args.stalls:
            src = subprocess.run(base + ["--section", "SourceCounters", "--page", "source", "--csv",
                                         "--print-source", "sass"] + me, capture_output=True, text=True).stdout
            print("\n".join(stalls_by_opcode(src)))


if __name__ == "__main__":
    main()
