"""Distance tables: a captured tensor read at an index of q_idx - kv_idx (and b, h), gathered per
call for every distance of the call's lengths, so the kernels read table[q_idx - kv_idx] (one load,
no index arithmetic, clamp or mask per score: `passes/toeplitz.distance_tables` picks the reads).

A table is [B or 1, H or 1, row] of the tensor's dtype, holding distance r at position r + OFF;
kernels get it from position OFF on (`p_distJ__<tensor>`, `codegen.render.table_name`) with strides for b and h (0 where the index reads
neither). The rows are padded by 256 on both sides: tile rows and columns past the lengths (up to a
tile of 128) read in bounds. OFF and the row length are multiples of 16, so the view's alignment and
strides specialize a kernel the same way for every length (no recompile when L changes).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ir.expr import Load
from ..ir.program import Program
from ..passes.toeplitz import distance_tables, reads
from ..reference import Evaluator
from .blocks import bh_strides

PAD = 256
_INDEX_CACHE = 16  # gather indices kept per kernel set (per lengths and tensor shape)


def _round16(n: int) -> int:
    return -(-n // 16) * 16


@dataclass(frozen=True)
class Table:
    load: Load
    by_batch: bool  # its index reads b
    by_head: bool   # its index reads h


def tables_of(prog: Program) -> list[Table]:
    """The program's distance tables, in kernel-argument order, worked out once per kernel set."""
    return [Table(load, reads(load, "b"), reads(load, "h")) for load in distance_tables(prog)]


def layout(table: Table, B: int, H: int, Lq: int, Lk: int) -> tuple[int, int, int, int]:
    """(batches, heads, row length, OFF) of `table` at these sizes."""
    off = _round16(Lk + PAD)
    return B if table.by_batch else 1, H if table.by_head else 1, _round16(off + Lq + PAD), off


def gather_index(table: Table, t: torch.Tensor, B: int, H: int, Lq: int, Lk: int) -> torch.Tensor:
    """[batches, heads, row] int64: the position in `t` (contiguous) of each table entry, its indices
    evaluated at q_idx = distance, kv_idx = 0 and clamped into `t` as the kernels clamp."""
    nb, nh, row, off = layout(table, B, H, Lq, Lk)
    r = torch.arange(row, device=t.device) - off
    env = {"b": torch.arange(nb, device=t.device).view(-1, 1, 1), "h": torch.arange(nh, device=t.device).view(1, -1, 1),
           "q_idx": r.view(1, 1, -1), "kv_idx": torch.zeros_like(r).view(1, 1, -1)}
    flat = flat_index(table.load, Evaluator(env, {}, torch.float32, t.device), t)
    return torch.as_tensor(flat, device=t.device).expand(nb, nh, row).contiguous()


def flat_index(load: Load, ev: Evaluator, t: torch.Tensor) -> torch.Tensor:
    """Element offsets of `load` in `t` (contiguous, as captured tensors reach the kernels), indices
    clamped into range as the kernels clamp them."""
    return sum(ev(i).to(torch.int64).clamp(0, n - 1) * st for i, n, st in zip(load.index, t.shape, t.stride()))


def kept(cache: dict, key, make, limit: int):
    """cache[key], made by `make()` where missing; at most `limit` entries, the least recently used
    dropped first (a dict in use order: the most recent last)."""
    value = cache.pop(key, None)
    if value is None:
        value = make()
        while len(cache) >= limit:
            cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def add_tables(kern, named: dict, B: int, H: int, Lq: int, Lk: int) -> dict:
    """`named` with each distance table of the kernels' under its argument name (`table_name`), as
    the view the kernels take; the gather indices are kept per sizes, the values gathered per call
    (a learnable tensor changes between steps)."""
    if not kern.tables:
        return named
    from ..codegen.render import table_name

    out = dict(named)
    for j, table in enumerate(kern.tables):
        t = named[table.load.param]
        key = (j, B, H, Lq, Lk, tuple(t.shape), t.device)
        index = kept(kern.table_index, key, lambda: gather_index(table, t, B, H, Lq, Lk), _INDEX_CACHE)
        off = layout(table, B, H, Lq, Lk)[3]
        out[table_name(j, table.load)] = torch.take(t, index)[..., off:]
    return out


def table_args(kern, tensors: dict) -> list:
    """Kernel arguments of the distance tables: each view, its batch and head strides (0 where one)."""
    from ..codegen.render import table_name

    args = []
    for j, table in enumerate(kern.tables):
        t = tensors[table_name(j, table.load)]
        args += [t, *bh_strides(t)]
    return args
