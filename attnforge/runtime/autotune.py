"""A small autotuner for tile configs, its choices cached in memory and on disk.

Off by default (a new variant's first call would otherwise compile every candidate): turn it on
with `attnforge.autotune(True)` or ATTNFORGE_AUTOTUNE=1. When on, a kernel whose (variant, spec,
device, kind, length bucket) has no choice yet times every candidate of its head-dim bucket
(`codegen/configs.py`) on the call's own arguments with CUDA-event timings, keeps the fastest and
writes it to $ATTNFORGE_CACHE_DIR/autotune.json. Choices found there are used whether tuning is on
or not, so one tuning run serves every later process. Candidates that do not fit the GPU's shared
memory or registers are skipped. Not for use during CUDA-graph capture (timing needs real launches).
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import astuple
from typing import Callable

import triton

from ..codegen.configs import TileConfig, candidates
from .cache import cache_dir, interpreting, write_atomic

_LOCK = threading.Lock()
_TABLE: dict[str, list[int]] | None = None
_FORCED: bool | None = None
TIMINGS: dict[str, dict[str, float]] = {}   # key -> {config: ms}, for benchmarks/sweep.py


def autotune(enabled: bool = True) -> None:
    """Turn tuning on or off for this process (overrides ATTNFORGE_AUTOTUNE)."""
    global _FORCED
    _FORCED = enabled


def enabled() -> bool:
    if _FORCED is not None:
        return _FORCED
    return os.environ.get("ATTNFORGE_AUTOTUNE", "0") not in ("", "0")


def _path():
    return cache_dir() / "autotune.json"


def _table() -> dict[str, list[int]]:
    global _TABLE
    if _TABLE is None:
        try:
            _TABLE = json.loads(_path().read_text())
        except (OSError, ValueError):
            _TABLE = {}
    return _TABLE


def _save(key: str, cfg: TileConfig) -> None:
    global _TABLE
    with _LOCK:
        try:  # merge with what other processes wrote meanwhile
            table = json.loads(_path().read_text())
        except (OSError, ValueError):
            table = {}
        table.update(_table())
        table[key] = list(astuple(cfg))  # (old entries, without the later fields, read back as their defaults)
        write_atomic(_path(), json.dumps(table, indent=1, sort_keys=True))
        _TABLE = table


def tuning_key(kernels_key: str, kind: str, length: int) -> str:
    """Lengths share a choice within a power-of-two bucket."""
    return f"{kernels_key}|{kind}|L{1 << max(length - 1, 0).bit_length()}"


def chosen(kernels, kind: str, length: int) -> TileConfig | None:
    """The config tuned earlier for this kernel, if any (None: the default, unless tuning is on)."""
    found = _table().get(tuning_key(kernels.key, kind, length))
    return TileConfig(*found) if found is not None else None


def will_tune(kernels, kind: str, length: int) -> bool:
    return enabled() and not interpreting() and chosen(kernels, kind, length) is None


def config_for(kernels, kind: str, length: int, make_call: Callable, launch: Callable) -> TileConfig | None:
    """The tuned config for this kernel, tuning now if enabled; None means "use the default"."""
    if interpreting():
        return None
    key = tuning_key(kernels.key, kind, length)
    found = chosen(kernels, kind, length)
    if found is not None or not enabled():
        return found
    times = {}
    for cfg in candidates(kind, kernels.spec.block_d):
        call = make_call(cfg)
        try:
            launch(kernels, call, fallback=False)
        except (triton.runtime.errors.OutOfResources, triton.compiler.errors.CompilationError):
            continue
        times[cfg] = triton.testing.do_bench(lambda: launch(kernels, call, fallback=False),
                                             warmup=5, rep=25, return_mode="median")
    TIMINGS[key] = {c.label: t for c, t in times.items()}
    if not times:
        return None
    best = min(times, key=times.get)
    _save(key, best)
    return best
