"""Tile configurations as data, per (kernel kind, head-dim bucket): the default each kernel launches
with, and the candidates the autotuner (`runtime/autotune.py`) times when tuning is on. Inner and
outer tiles divide the 128 x 128 sparse tiles of the block metadata."""
from __future__ import annotations

import re
from dataclasses import dataclass

SPARSE_BLOCK = 128
# Kernels whose tiles are smaller than SPARSE_BLOCK walk block metadata of their own, in tiles of
# max(FINE_SPARSE_BLOCK, their tile) a side: a 128 x 128 tile on a mask's edge (a causal diagonal, a
# document's border) holds 64 x 64 quarters that are empty (skipped) or full (no mask evaluated). Up
# to FINE_MAX_TILES tiles: L = 131072 with 64-tiles, 64 MB of lists for a mask that reads neither b
# nor h (the metadata grows as (L / tile)^2); beyond, the 128 x 128 metadata serves, and a kernel
# whose length crosses that bound compiles once more (the metadata's tile sizes are constexprs).
FINE_SPARSE_BLOCK = 64
FINE_MAX_TILES = 1 << 22


@dataclass(frozen=True)
class TileConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int
    tma: bool = True   # tiles through tensor descriptors where the layout allows
    sm90: bool = False  # the Gluon forward for Hopper (fwd_sm90.py.jinja) where it applies
    # registers per thread at launch (0: the compiler's choice); the Gluon forward's 12 warps take
    # all of an SM's at 168, one program per SM; at 80 two programs share an SM
    maxnreg: int = 0

    @property
    def label(self) -> str:
        return (f"{self.block_m}x{self.block_n} w{self.num_warps} s{self.num_stages}"
                f"{'' if self.tma else ' ptr'}{' sm90' if self.sm90 else ''}"
                f"{f' r{self.maxnreg}' if self.maxnreg else ''}")

    @classmethod
    def from_label(cls, label: str) -> TileConfig:
        """The config a `label` names ("64x64 w4 s3 ptr r168"; benchmarks/sweep.py --candidate)."""
        m = re.fullmatch(r"(\d+)x(\d+) w(\d+) s(\d+)( ptr)?( sm90)?(?: r(\d+))?", label.strip())
        if m is None:
            raise ValueError(f"tile label: expected like '64x64 w4 s3 [ptr] [sm90] [r168]', got {label!r}")
        bm, bn, w, st, ptr, sm90, regs = m.groups()
        return cls(int(bm), int(bn), int(w), int(st), not ptr, bool(sm90), int(regs or 0))


def _configs(*rows: tuple) -> list[TileConfig]:
    return [TileConfig(*r) for r in rows]


P = False  # a candidate's last field: load through pointers even where TMA could


# kind -> [(max padded head dim, default, candidates)], first bucket that fits wins.
# Defaults: H100 (sm_90), bf16, B=16 H=16 L=2048 D=128, kernel-level timings of benchmarks/sweep.py
# (benchmarks/RESULTS.md, 2026-11-24):
# - fwd 64x64 w4 s3 through pointers (causal 0.73 ms vs 0.86-0.93 for 128x64 w8): as fast as TMA on
#   long programs (full 1.199 vs 1.186 ms, causal 0.727 vs 0.734) and far faster on short ones
#   (document masks 0.348 vs 0.556 ms: TMA's three stages take 113 KiB of shared memory, one program
#   per SM). 64x64 w4 s2 with TMA (80 KiB, two programs per SM) is the best on short programs
#   (document 0.327 ms) and loses on long ones (full 1.42 ms); 64x128 w4 (FlashAttention-3's tile per
#   warp group) was slower everywhere (full 1.45-1.65 ms).
# - dK/dV 64x64 w4 s2 (1.25 ms; next 32x64 w4 s3 1.41), dQ 64x64 w4 s2 (0.85 ms; next 128x64 w8 s3
#   0.96).
# Candidates: the few next best of those sweeps, with and without TMA.
# The sm_90 Gluon forward: 128 query rows (two consumer warp groups of 64 and a producer warp; `num_warps`
# counts the first group's), 128-key tiles, three TMA stages (224 KiB of shared memory), the consumer
# groups taking turns to issue their products (ping-pong) with 240 registers each (setmaxnreg), the
# producer 24. On the H100 (bf16, same process; benchmarks/sm90_options.py, RESULTS.md fifth session):
# B=4 H=16 L=8192 D=128 full 3.58 ms vs 5.04 for the Triton forward and 4.45 for flex, causal 2.08
# vs 2.52 and 2.64; B=16 H=16 L=2048 (host-built descriptors) full 0.98 vs 1.26 and 1.16, causal
# 0.68 vs 0.79 and 0.81. Two stages: 8-13% slower; without ping-pong or at 232 registers: within 3%.
# O written back by one TMA copy per consumer group (seventh session): 1-13% faster than stores from
# registers (B=16 H=16 L=2048: full 1.02 ms, causal 0.63, document8 0.28). A persistent variant (one
# program per SM taking tiles from a counter) measured within noise or slower and was dropped.
SM90_FWD = TileConfig(128, 128, 4, 3, True, True)
# Head dim 64 (padded; eighth session): the same tile, four stages (K and V take half the shared
# memory; 3, 4 and 6 stages within 1%), no ping-pong (one group's products are too short to cover the
# other's softmax: causal 1.355 ms without, 1.407 with). B=4 H=16 L=8192 D=64, ms: full 2.63 vs
# 2.75 for the Triton forward and 2.66 for flex, causal 1.36 vs 1.49 and 1.48; document8 0.35 vs 0.33
# (short programs) and softcap 2.05 vs 1.93 are slower than the Triton forward. 64-key tiles: 10-15%
# slower.
SM90_FWD_64 = TileConfig(128, 128, 4, 4, True, True)
# Short programs (tenth session): tiles that let several programs share an SM (`maxnreg`), so one
# program's start (Q's load, the first QK^T and softmax that nothing overlaps) and end (the last PV,
# O's store) run beside another's loop. Head dim 128: one consumer warp group of 64 rows, 64-key
# tiles, three stages (112.2 KB of shared memory, 128 registers at launch: two programs per SM, just;
# two stages, 80 KB: document8 0.243 ms, document_random 0.442 vs 0.244 and 0.429); head dim
# 64: two groups, 64-key tiles, three stages, 80 registers at launch (two 12-warp programs per SM; a
# consumer group's 104 registers hold its 64 x 64 scores and O). Same process, kernel ms
# (benchmarks/sm90_options.py), vs the ninth session's 64-key tile with one program per SM
# (128x64, 3 stages, ping-pong):
# D=128 B=16 H=16 L=2048: document8 (1.5 key tiles per query tile) 0.263 -> 0.244 (flex 0.291),
# document_random (3.9) 0.467 -> 0.445 (flex 0.502), sliding1024 0.566 -> 0.585; B=4 H=16 L=8192:
# document8 (4.5) 0.446 -> 0.452, document_random 0.784 -> 0.806, sliding1024 0.707 -> 0.707.
# D=64 B=4 H=16 L=8192, vs the 128x128 4-stage default: document8 0.338 -> 0.269 (flex 0.452),
# sliding1024 (8.9) 0.458 -> 0.425-0.430 (flex 0.462), full (64) 2.449 -> 2.533-2.594, causal (32.5)
# 1.344 -> 1.409, ALiBi causal 1.711 -> 1.732; B=16 H=16 L=2048 D=64 (flex, old default -> new): full
# (16) 0.704, 0.693 -> 0.677; causal 0.440, 0.455 -> 0.410; sliding1024 0.386, 0.400 -> 0.358;
# document8 0.275, 0.225 -> 0.164; document_random 0.502 -> 0.297. (At head dim 128 a 12-warp program
# cannot run on 80 registers: ptxas needs 94 for the PV product's 64 accumulator registers. One group
# on 80 registers, three programs per SM, crashed with an illegal address at head dim 64 with 3 or 4
# stages, not 2: not used.)
SM90_FWD_M64 = TileConfig(64, 64, 4, 3, True, True, 128)
SM90_FWD_64_N64 = TileConfig(128, 64, 4, 3, True, True, 80)
# Head dim 64, long programs of plain scores (thirteenth session): three consumer groups (192-row
# tiles, FlashAttention-3's tile at this head dim; 16 warps, 128 registers at launch, 160 per
# consumer group, no spills), three stages. K and V tiles serve 192 query rows, and with three
# groups one's softmax overlaps two others' products. B=4 H=16 L=8192 D=64, same process, kernel ms,
# 128-row tile (4 stages) -> 192 (3 stages; 4 stages; ping-pong): full 2.395 -> 2.243 (2.200; 2.192),
# causal 1.315-1.336 -> 1.241 (1.260; 1.247), prefix_lm1024 1.340 -> 1.273 (4 stages); flex 2.622 /
# 1.471 / 1.502. Slower with a score_mod (ALiBi 1.717 -> 2.231, softcap 2.082 -> 2.194: the
# score's own registers) and on short programs (sliding1024 0.456 -> 0.544, document8 0.315 ->
# 0.672: a 192-row tile crosses a mask's edge in more key tiles), which keep the tiles above.
# (Head dim 128 needs ~190 registers a group: not with three.)
SM90_FWD_64_M192 = TileConfig(192, 128, 4, 3, True, True, 128)
# Head dim 64, long programs with a score_mod (thirteenth session): the Triton forward (its 128 x 64
# tile) beats the Gluon one, whose consumer groups then spend their time on the score's own
# arithmetic. B=4 H=16 L=8192 D=64, same process, kernel ms, Triton / Gluon 128-row tile (3; 4
# stages): ALiBi causal 1.539 / 1.622; 1.591 (flex 1.837), softcap causal 1.962 / 2.082 (4 stages;
# flex 5.202). Not where the kernels read a tensor: the learnable relative bias (a distance table)
# took 12.95 ms in the Triton forward against 1.99 in the Gluon one. Its tile loads K and V through
# pointers (fourteenth session, `benchmarks/sweep.py`, two runs, kernel ms, TMA -> pointers): ALiBi
# 1.573-1.576 -> 1.501-1.543, softcap 2.006 -> 1.922 (64 x 64 with TMA: ALiBi 1.580-1.596, softcap
# 1.807). None: the Gluon forward's tile.
SM90_TRITON_SCORE_MOD_64: TileConfig | None = TileConfig(128, 64, 4, 3, tma=False)
# 64-key tiles, one program per SM (the ninth session's short-program tile; autotuner candidate):
# B=16 H=16 L=2048 D=128 vs 128-key tiles, kernel ms: document8 0.280 -> 0.262, document_random
# 0.529 -> 0.464; causal 0.618 -> 0.657.
SM90_FWD_N64 = TileConfig(128, 64, 4, 3, True, True)
# The default takes the short-program tiles where query tiles have at most this many 128-key tiles
# on average in the variant's first block metadata (decided once per variant: a new length compiles
# nothing), by padded head dim.
SM90_SHORT_ROWS = {64: 16.0, 128: 4.0}
SM90_WG_ROWS = 64  # query rows per consumer warp group: block_m / 64 groups (one, two or three)
SM90_PRODUCER_REGS = 24
SM90_CONSUMER_REGS: int | None = None  # a fixed setmaxnreg for the consumer groups (benchmarks/sm90_options.py)
# by padded head dim:
SM90_PINGPONG = {64: False, 128: True}  # the two consumer groups take turns issuing their products


def sm90_consumer_regs(cfg: TileConfig) -> int:
    """Registers of the second (and third) consumer group: Triton gives the first what the producer's
    group and the others leave of the program's launch registers (`maxnreg`, else the compiler's:
    168 for 12 warps) x 128 per group; the largest multiple of 8 that leaves the first as many (240
    for two groups at 168)."""
    if SM90_CONSUMER_REGS:
        return SM90_CONSUMER_REGS
    groups = cfg.block_m // SM90_WG_ROWS
    launch = cfg.maxnreg or 65536 // (128 * (groups + 1)) // 8 * 8
    return ((groups + 1) * launch - SM90_PRODUCER_REGS) // groups // 8 * 8


def sm90_pingpong(cfg: TileConfig, block_d: int) -> bool:
    return SM90_PINGPONG[64 if block_d <= 64 else 128] and cfg.block_m > SM90_WG_ROWS


def sm90_config(block_d: int, row_tiles: float | None = None, plain: bool = False,
                reads: bool = True) -> TileConfig:
    """The forward's default tile on Hopper, where the Gluon forward covers the variant, for a
    padded head dim (64 or 128), programs of `row_tiles` 128-key tiles on average (None: not known),
    scores with no score_mod (`plain`) and kernels that read captured tensors (`reads`): a Gluon
    tile, or at head dim 64 a Triton forward's for long programs with a score_mod that reads no
    tensor (SM90_TRITON_SCORE_MOD_64)."""
    if row_tiles is not None and row_tiles <= SM90_SHORT_ROWS[64 if block_d <= 64 else 128]:
        return SM90_FWD_64_N64 if block_d <= 64 else SM90_FWD_M64
    if block_d > 64:
        return SM90_FWD
    if plain:
        return SM90_FWD_64_M192
    return SM90_TRITON_SCORE_MOD_64 if SM90_TRITON_SCORE_MOD_64 and not reads else SM90_FWD_64

# Head dim 64, 16-bit inputs (float32 tiles would spill 4-8 KB), scores whose backward takes no
# derivative of a score_mod (none, ALiBi, a bias: `linear`): 168 registers at launch, three programs
# per SM instead of two (12 warps; ptxas spills 128-352 bytes, outside the hot loop enough to gain:
# sixteenth session). Kernel ms, H100, `benchmarks/sweep.py`, default tile (no cap) -> capped,
# B=4 H=16 L=8192 D=64: full 7.623 -> 6.514 (3 stages), causal 3.899 -> 3.556, prefix_lm1024 3.973 -> 3.399, sliding1024 1.232 (pointers) ->
# 1.050, document8 0.827 -> 0.716 (2 stages, pointers), document_random 1.399 -> 1.220-1.294, ALiBi
# 4.407 -> 4.110 (2 stages), rel_bias 9.781 -> 9.198 (2 stages), GQA 32:8 8.022 -> 7.537 (2 stages);
# B=16 H=16 L=2048 D=64: full 2.076 -> 1.836, causal 1.235 (pointers) -> 1.096, sliding1024 1.024 ->
# 0.908, document8 0.539 -> 0.413, ALiBi 1.340 -> 1.273, GQA 2.437 -> 2.371. Softcap (its derivative
# is 1 - tanh^2: more live values) loses with the cap (4.820 -> 6.307-6.779 ms): no cap there, nor at
# head dim 128 (1 KB of spills: causal 2048 1.926 -> 3.522). Three stages win for plain scores with
# one query head per kv head on long programs, two elsewhere (GQA's loop over the group's heads,
# score_mods); programs of at most BWD_CAPPED_SHORT_ROWS_64 tiles load through pointers (document8
# at 2048: 0.413 vs 0.574 for three stages through TMA; causal at 2048, 8.5 tiles: 1.096 vs 1.165).
# Not for score_mods that read captured tensors: the learnable relative bias (a distance table read
# per score, `_ld_nc`) at 4,16,8192,64 takes 5.017 ms uncapped (64x64 w4 s3) against 5.790 capped
# (s2; 6.160 s3; seventeenth session).
BWD_64_CAPPED = TileConfig(64, 64, 4, 3, maxnreg=168)
BWD_64_CAPPED_S2 = TileConfig(64, 64, 4, 2, maxnreg=168)
BWD_64_CAPPED_SHORT = TileConfig(64, 64, 4, 2, tma=False, maxnreg=168)
BWD_CAPPED_SHORT_ROWS_64 = 8.0

CONFIGS = {
    "fwd": [
        (64, TileConfig(128, 64, 4, 3),
         _configs((128, 64, 4, 3), (128, 128, 8, 3), (64, 64, 4, 3), (128, 64, 4, 3, P), (64, 64, 4, 3, P))
         + [SM90_FWD_64, SM90_FWD_64_N64, SM90_FWD_64_M192]),
        (128, TileConfig(64, 64, 4, 3, P),
         _configs((64, 64, 4, 3), (64, 64, 4, 2), (128, 128, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3, P),
                  (128, 64, 8, 3, P)) + [SM90_FWD, SM90_FWD_M64, SM90_FWD_N64]),
        (256, TileConfig(64, 32, 4, 2), _configs((64, 32, 4, 2), (64, 64, 4, 2), (64, 32, 4, 2, P))),
    ],
    "bwd_preprocess": [(256, TileConfig(64, 0, 4, 1), [])],
    "bwd_dkdv": [
        (64, TileConfig(64, 64, 4, 2),
         _configs((64, 64, 4, 2), (64, 128, 8, 3), (32, 128, 4, 3), (64, 64, 4, 2, P))),
        (128, TileConfig(64, 64, 4, 2),
         _configs((64, 64, 4, 2), (64, 128, 8, 2), (32, 64, 4, 3), (64, 64, 4, 2, P))),
        (256, TileConfig(32, 32, 4, 1), _configs((32, 32, 4, 1), (32, 64, 4, 1), (32, 32, 4, 1, P))),
    ],
    "bwd_dq": [
        (64, TileConfig(64, 64, 4, 2),
         _configs((64, 64, 4, 2), (128, 64, 8, 3), (128, 32, 4, 3), (64, 64, 4, 2, P))),
        (128, TileConfig(64, 64, 4, 2),
         _configs((64, 64, 4, 2), (128, 64, 8, 3), (128, 64, 8, 2), (64, 64, 4, 2, P))),
        (256, TileConfig(32, 32, 4, 1), _configs((32, 32, 4, 1), (64, 32, 4, 1), (32, 32, 4, 1, P))),
    ],
    # dK/dV and dQ in one launch (`bwd`): one config for both parts. H100, bf16, B=16 H=16 L=2048
    # D=128, kernel only (benchmarks/RESULTS.md, sixth session), full / causal / document8 ms: 64x64 w4
    # s2 3.494 / 2.150 / 0.807, through pointers 4.155 / 2.372 / 0.907, 64x64 w4 s3 4.311 / 2.913 /
    # 1.412, 32x64 w4 s3 5.413 / 3.102 / 1.050; 64x128 w8 s2, 128x64 w8 s2, 64x32 w4 s3, 64x64 w8 s2
    # and 128x128 w8 s2 were slower still. Head dim 64 (eighth session, B=4 H=16 L=8192, two sweeps):
    # 64x64 w4 s3 full 7.47-7.68 / causal 4.00-4.04 / sliding 1.40 / document8 0.95-0.96 / ALiBi 4.43
    # / GQA 8.19 vs s2's 7.99-8.12 / 4.32-4.33 / 1.47 / 0.93 / 4.73 / 8.72; 128x64 w4 s2 wins the
    # short programs, ALiBi and GQA (0.87 / 4.21 / 8.03) and loses full and causal (8.27 / 4.36);
    # s4, 8-warp and 128-key tiles were slower. At head dim 128 (same session, B=16 H=16 L=2048) 64x64 w4
    # s2 stays: full 3.44 ms vs 5.35-8.05 for 128x64 w8, 32x64, 64x32, 128x32, 128x64 w4 and 64x64 w8.
    "bwd": [
        (64, TileConfig(64, 64, 4, 3), _configs((64, 64, 4, 3), (128, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 4),
                                                 (64, 64, 4, 3, P))
         + [BWD_64_CAPPED, BWD_64_CAPPED_S2, BWD_64_CAPPED_SHORT]),
        (128, TileConfig(64, 64, 4, 2), _configs((64, 64, 4, 2), (64, 64, 4, 2, P), (32, 64, 4, 3), (64, 64, 4, 3))),
        (256, TileConfig(32, 32, 4, 1), _configs((32, 32, 4, 1), (32, 32, 4, 1, P), (32, 64, 4, 1))),
    ],
    # square T x T tiles (block_m = block_n = T) summed along diagonal bands; pointer loads only.
    # rel_bias_causal, kernel ms (twelfth session, H100): B=16 H=16 L=2048 D=128 64x64 w4 s1 1.86, s2
    # 2.29, s3 2.29, w8 s2 2.09, 32x32 w4 s3 5.27; B=4 H=16 L=8192 D=128 6.68 / 8.81 / 8.65 / 7.68 /
    # 18.75; D=64 4.50 / 4.28 / 4.05 / 3.94 / 8.63. 128 x 128 w8 s1 (s2 needs 266 KB of shared memory):
    # 2.05 / 6.44 / D=64 5.04. At head dim 128 a third program per SM (168 registers, 24 bytes of
    # spills) 1.82 -> 1.66 and 6.37 -> 6.10; w8 s1 1.95 / 6.99; 128 registers (96 bytes) 1.78 / 6.57.
    # Head dim 64 (sixteenth session): three programs per SM as well (168 registers, no spills), kernel
    # ms, w8 s2 (the old default) -> w4 s3 r168: B=4 H=16 L=8192 3.474 -> 3.261, B=16 H=16 L=2048
    # 1.023 -> 0.909 (w4 s2 r168 3.346 / 0.932, w4 s2 3.372 / 0.974). For 16-bit inputs: float32
    # tiles spill 2.2 KB on 168 registers (568 bytes with w8 s2, BWD_DIAG_64_WIDE).
    # Seventeenth session (tables read through the read-only cache), rel_bias causal, kernel ms:
    # head dim 128 w4 s1 r168 5.436 (4,16,8192) / 1.478 (16,16,2048) vs w8 s1 6.190 / 1.740, w4 s2
    # r168 6.296 / 1.844; head dim 64 w4 s3 r168 3.046 vs w8 s2 3.020 (4,16,8192): defaults kept.
    # Eighteenth session, the table read hoisted out of the band's loop (`d_band`), kernel ms before ->
    # after: 4,16,8192,128 5.365 -> 4.997 (w4 s1 uncapped 4.993, w8 s1 8.497, w8 s2 7.256);
    # 16,16,2048,128 1.473 -> 1.361 (w4 s1 1.422); 4,16,8192,64 3.023 -> 2.561 (w8 s2 3.093, w4 s2
    # r168 2.797): defaults kept. Also tried and dropped: T x 2T tiles (two adjacent bands a program,
    # Q and dO read once for both; 64x128 w8 s1 r128 5.476 / 1.726, head dim 64 w8 s2 r128 3.326) and
    # one program per query tile as dQ's, storing each tile's diagonal sums (a gather per tile;
    # the whole backward 16.37 -> 16.94 ms at 4,16,8192,128, 10.04 -> 12.29 at 4,16,8192,64).
    "bwd_diag": [
        (64, TileConfig(64, 64, 4, 3, maxnreg=168),
         _configs((64, 64, 8, 2), (64, 64, 4, 2), (64, 64, 4, 3), (64, 64, 4, 1))
         + [TileConfig(64, 64, 4, 2, maxnreg=168), TileConfig(64, 64, 4, 3, maxnreg=168)]),
        (128, TileConfig(64, 64, 4, 1, maxnreg=168),
         _configs((64, 64, 4, 1), (64, 64, 8, 2), (64, 64, 4, 2), (64, 64, 8, 1), (32, 32, 4, 2))),
        (256, TileConfig(32, 32, 4, 1), _configs((32, 32, 4, 1), (64, 64, 8, 1))),
    ],
}


BWD_DIAG_64_WIDE = TileConfig(64, 64, 8, 2)  # bwd_diag at head dim 64 for float32 inputs


def diag_config(block_d: int, dtype: str) -> TileConfig:
    """bwd_diag's default tile for a padded head dim and the inputs' dtype ("float32", "bfloat16" ...)."""
    if block_d <= 64 and dtype == "float32":
        return BWD_DIAG_64_WIDE
    return tile_config("bwd_diag", block_d)


def _bucket(kind: str, block_d: int):
    for limit, default, candidates in CONFIGS[kind]:
        if block_d <= limit:
            return default, candidates
    raise ValueError(f"head dim: expected at most 256, got a padded size of {block_d}")


def tile_config(kind: str, block_d: int) -> TileConfig:
    return _bucket(kind, block_d)[0]


# The one-launch backward at head dim 64 for short programs (at most BWD_SHORT_ROWS_64 128-key tiles
# per query tile in the forward's measure, `row_tiles`): the default tile with pointer loads, which
# build no tensor descriptor per program. Fifteenth session, `benchmarks/sweep.py`, kernel ms, TMA ->
# pointers (row_tiles): B=4 H=16 L=8192 document8 (4.5) 0.884 -> 0.827, sliding1024 (~9) 1.273 ->
# 1.243; B=16 H=16 L=2048 causal (8.5) 1.266 -> 1.240. Longer programs keep TMA: L=2048 full (16)
# 2.065 vs 2.119; L=8192 full 7.369 vs 7.787, causal (32.5) 4.009 vs 4.155, ALiBi 4.445 vs 4.489, GQA
# 8.083 vs 8.224.
BWD_64_SHORT = TileConfig(64, 64, 4, 3, tma=False)
BWD_SHORT_ROWS_64 = 12.0


def bwd_config(block_d: int, row_tiles: float | None, plain: bool = False, linear: bool = False,
               dtype: str = "bfloat16", reads: bool = False) -> TileConfig:
    """The one-launch backward's default tile for a padded head dim, the forward's program length
    (`row_tiles`, None: not known), scores without a score_mod and one query head per kv head
    (`plain`), a score_mod whose derivative is one (`linear`, implied by `plain`), the inputs'
    dtype ("float32", "bfloat16" ...) and a score_mod that reads captured tensors (`reads`,
    codegen.score_reads)."""
    if block_d > 64:
        return tile_config("bwd", block_d)
    if (plain or (linear and not reads)) and dtype != "float32":
        if row_tiles is not None and row_tiles <= BWD_CAPPED_SHORT_ROWS_64:
            return BWD_64_CAPPED_SHORT
        return BWD_64_CAPPED if plain else BWD_64_CAPPED_S2
    if row_tiles is not None and row_tiles <= BWD_SHORT_ROWS_64:
        return BWD_64_SHORT
    return tile_config("bwd", block_d)


def candidates(kind: str, block_d: int) -> list[TileConfig]:
    """The default first, then the other candidates."""
    default, cands = _bucket(kind, block_d)
    return [default, *(c for c in cands if c != default)]
