"""Time every tile-config candidate of each kernel (the autotuner's own timings, kernel by kernel)
for some of the benchmark's cases and shapes: the data behind the defaults in codegen/configs.py.

    python benchmarks/sweep.py --shape 16,16,2048,128 --case causal --case full --case document8
    python benchmarks/sweep.py --shape 4,16,8192,64 --case causal --defaults-only \
        --candidate "bwd=64x64 w4 s3" --candidate "bwd=64x64 w4 s3 r168"

`--candidate KIND=LABEL` (repeatable) times exactly those tiles for KIND (after its default) at the
shape's head dim; `--defaults-only` times every other kernel's default alone.
"""
from __future__ import annotations

import argparse
import os
import tempfile

import torch

import attnforge
from attnforge.bench import best_config, case_inputs, cases
from attnforge.codegen import configs
from attnforge.codegen.configs import TileConfig
from attnforge.runtime import autotune


def set_candidates(chosen: dict[str, list[TileConfig]], defaults_only: bool) -> None:
    """The autotuner's candidates: `chosen` per kind (every head-dim bucket), defaults alone for the
    other kinds where `defaults_only`."""
    for kind, buckets in configs.CONFIGS.items():
        if kind in chosen or defaults_only:
            configs.CONFIGS[kind] = [(limit, default, chosen.get(kind, [])) for limit, default, _ in buckets]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", action="append", default=None, help="B,H,L,D (repeatable)")
    ap.add_argument("--case", action="append", default=None, help="a case of attnforge.bench (repeatable)")
    ap.add_argument("--candidate", action="append", default=[], metavar="KIND=LABEL",
                    help="time this tile for KIND (repeatable; replaces KIND's candidates)")
    ap.add_argument("--defaults-only", action="store_true", help="other kernels time their default alone")
    args = ap.parse_args()
    chosen: dict[str, list[TileConfig]] = {}
    for item in args.candidate:
        kind, _, label = item.partition("=")
        if kind not in configs.CONFIGS:
            ap.error(f"--candidate {item!r}: kind must be one of {', '.join(configs.CONFIGS)}")
        chosen.setdefault(kind, []).append(TileConfig.from_label(label))
    set_candidates(chosen, args.defaults_only)
    os.environ["ATTNFORGE_CACHE_DIR"] = tempfile.mkdtemp()  # tune afresh, leave no choices behind
    attnforge.autotune(True)
    for shape in args.shape or ["16,16,2048,128"]:
        B, H, L, D = map(int, shape.split(","))
        for case in cases(B, H, L):
            if case.name not in (args.case or ["causal"]):
                continue
            v, q, k, vv = case_inputs(case, B, H, L, D)
            autotune.TIMINGS.clear()
            v(q, k, vv, enable_gqa=q.shape[1] != k.shape[1]).backward(torch.randn_like(q))
            torch.cuda.synchronize()
            for key, times in autotune.TIMINGS.items():
                kind = key.split("|")[1]
                best = best_config(times)
                cells = "  ".join(f"{c}: {t:.3f}" for c, t in sorted(times.items(), key=lambda x: x[1]))
                print(f"{case.name:16} {shape:16} {kind:9} best {best:16} | {cells}", flush=True)


if __name__ == "__main__":
    main()
