"""Tile configurations as data: per (kernel kind, head-dim bucket). Tiles divide the 128 x 128
sparse tiles of the block metadata. Tuning (issue 5) replaces these with autotuned choices."""
from __future__ import annotations

from dataclasses import dataclass

SPARSE_BLOCK = 128


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# kind -> [(max padded head dim, config)], first match wins
CONFIGS = {
    # H100, causal B=2 H=8 L=4096 D=128 bf16 (benchmarks/sweep.py, 2026-11-24): fwd 128x64 w8 s2
    # 0.261 ms (w4 s3: 0.372 ms); dK/dV 64x64 w4 s2 best of 7; dQ 64x32 w4 s3 best of 6
    "fwd": [(64, TileConfig(128, 64, 4, 3)), (128, TileConfig(128, 64, 8, 2)),
            (256, TileConfig(64, 32, 4, 2))],
    "bwd_preprocess": [(256, TileConfig(64, 0, 4, 1))],
    "bwd_dkdv": [(64, TileConfig(64, 64, 4, 2)), (128, TileConfig(64, 64, 4, 2)),
                 (256, TileConfig(32, 32, 4, 1))],
    "bwd_dq": [(64, TileConfig(64, 64, 4, 2)), (128, TileConfig(64, 32, 4, 3)),
               (256, TileConfig(32, 32, 4, 1))],
}


def tile_config(kind: str, block_d: int) -> TileConfig:
    for limit, cfg in CONFIGS[kind]:
        if block_d <= limit:
            return cfg
    raise ValueError(f"head dim: expected at most 256, got a padded size of {block_d}")
