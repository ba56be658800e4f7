"""Tile configs of the bias-gradient kernel (`bwd_diag`) for rel_bias_causal: forward ms, then per
config the backward's timed ms and its kernels' ms (torch.profiler: main backward with its preprocess,
bwd_diag, the torch ops around them).

    python benchmarks/diag_tiles.py "16,16,2048,128;4,16,8192,128" 64,64,4,1 64,64,8,2 64,64,4,1,1,0,168

A config is TileConfig's fields in order (block_m, block_n, num_warps, num_stages[, tma, sm90, maxnreg]).
"""
from __future__ import annotations

import sys

import torch
import torch._functorch.config

from attnforge import bench
from attnforge.codegen import configs
from attnforge.codegen.configs import TileConfig

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from profile_bwd import kernel_times  # noqa: E402


def main(shapes: str, cfgs: list[str]) -> None:
    torch._functorch.config.donated_buffer = False  # the profiler reruns one backward's graph
    tiles = [TileConfig(*map(int, c.split(","))) for c in cfgs]
    for shape in shapes.split(";"):
        B, H, L, D = map(int, shape.split(","))
        for case, variant, q, k, v in bench.selected_cases(B, H, L, D, ["rel_bias_causal"]):
            do = torch.randn_like(q)
            inputs = [q, k, v, *case.learnable.values()]
            fwd = bench._time(lambda: variant(q, k, v), True)
            for cfg in tiles:
                configs.CONFIGS["bwd_diag"] = [(256, cfg, [])]
                out = variant(q, k, v)
                times = kernel_times(lambda: torch.autograd.grad(out, inputs, do, retain_graph=True))
                wall = bench._time(lambda: torch.autograd.grad(out, inputs, do, retain_graph=True), True)
                diag = sum(t for n, t in times.items() if "diag" in n)
                main_bwd = sum(t for n, t in times.items() if n.startswith("attn_bwd") and "diag" not in n)
                print(f"{shape} fwd {fwd:.3f} | {cfg.label}: bwd {wall:.3f} ms; kernels: main {main_bwd:.3f}, "
                      f"bwd_diag {diag:.3f}, other {sum(times.values()) - diag - main_bwd:.3f}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
