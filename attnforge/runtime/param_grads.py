"""Gradients of learnable captured tensors, deterministic (no float atomics).

For each read `t[index]` of a learnable tensor in the score_mod, `differentiate` gives
d score_mod / d t[index]; its gradient is the sum over allowed pairs of dS * that derivative,
scattered to `index`. Two ways, both in a fixed order so two backward runs give identical bits:

- reads indexed by q_idx - kv_idx (relative-position biases; `passes/toeplitz.py`): the generated
  `bwd_diag` kernel sums each diagonal band of tiles in registers and reduces the sum to its
  diagonals; the host overlaps the bands, sums the batches and scatters the per-distance sums;
- any other read: scores are recomputed in torch a block of query rows at a time
  (O(B * H * rows * Lk) memory) and reduced with a stable sort and sequential segment sums.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..codegen.configs import TileConfig, diag_config
from ..ir.expr import Load, walk
from ..ir.program import Program
from ..reference import Evaluator, index_env
from .blocks import BandLists
from .tables import flat_index, kept

ROW_BUDGET = 1 << 24  # elements of one recomputed score block
DIAG_INDEX_CACHE = 8  # bias-gradient scatter plans (or False: none) kept per kernel set (per sizes)


@dataclass(frozen=True)
class Segments:
    """Where summands go, worked out from their indices alone (so it can be kept while they stay):
    a stable order by index and, per index, its first and last position in that order (n and -1
    where none goes)."""

    index: torch.Tensor
    order: torch.Tensor
    first: torch.Tensor
    last: torch.Tensor


def segments(index: torch.Tensor, size: int) -> Segments:
    """The Segments of `index` into `size` slots (a stable sort and two integer scatters; no host
    sync)."""
    n = index.numel()
    order = torch.sort(index, stable=True).indices
    pos = torch.arange(n, device=index.device)
    idx = index[order]
    last = torch.full((size,), -1, dtype=pos.dtype, device=pos.device).scatter_reduce_(0, idx, pos, "amax")
    first = torch.full((size,), n, dtype=pos.dtype, device=pos.device).scatter_reduce_(0, idx, pos, "amin")
    return Segments(index, order, first, last)


def segment_sum(index: torch.Tensor, values: torch.Tensor, size: int, plan: Segments | None = None) -> torch.Tensor:
    """out[i] = sum of values[index == i], in a fixed order and without a host sync: a stable sort
    by index, a float64 running sum, and per index its last minus its first position's running
    sum (integer max/min scatters find those positions; they do not depend on order). `plan`: the
    index's Segments, made earlier (the sort and scatters are then not repeated)."""
    n = index.numel()
    if n == 0:
        return torch.zeros(size, dtype=values.dtype, device=values.device)
    plan = plan or segments(index, size)
    val = values[plan.order].double()
    running = torch.cumsum(val, 0)
    f = plan.first.clamp(max=n - 1)
    total = running[plan.last.clamp(min=0)] - running[f] + val[f]
    return torch.where(plan.last >= 0, total, 0.0).to(values.dtype)


def diag_call(kern, i: int, buffers, tensors: dict, scale: float, bands: BandLists, part: torch.Tensor,
              cfg: TileConfig):
    """The bwd_diag launch for read `i` of d_loads, writing each (batch * head, band)'s 2T - 1
    diagonal sums of cfg.block_m-square tiles into `part`."""
    from .launch import Call, launch_options, list_args, param_args, precision

    q, k, v = buffers.q, buffers.k, buffers.v
    B, H, Lq, D = q.shape
    args = [q, k, v, buffers.do, buffers.lse2, buffers.delta, part, *q.stride(), *k.stride(), *v.stride(),
            *buffers.do.stride(), Lq, k.shape[2], H, scale, bands.num, bands.ind, bands.kind, bands.order,
            *list_args(bands), *param_args(kern, tensors)]
    consts = dict(GROUP=kern.spec.group, D=D, DV=v.shape[3], T=cfg.block_m,
                  BLOCK_D=kern.spec.block_d, BLOCK_DV=kern.spec.block_dv, **precision(q.dtype))
    return Call("bwd_diag", f"attn_bwd_diag_{i}", (Lq, k.shape[2], cfg.block_m, B * H), args, consts, launch_options(cfg))


def diagonal_grad(kern, i: int, load, buffers, tensors: dict, scale: float, bm) -> torch.Tensor:
    """Flat float32 gradient of the Toeplitz read `load` (position `i` in d_loads), via bwd_diag."""
    from . import autotune
    from .launch import launch, tile_block_mask

    q, k = buffers.q, buffers.k
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]

    def plan(cfg: TileConfig):
        """(call, part buffer) for square tiles of cfg.block_m, walking metadata in tiles of that
        size (finer where the variant's is coarser)."""
        T = cfg.block_m
        bands = tile_block_mask(kern, bm, B, H, q.device, tensors, cfg).bands(T)
        part = torch.empty(B * H, bands.order.numel(), 2 * T - 1, dtype=torch.float32, device=q.device)
        return diag_call(kern, i, buffers, tensors, scale, bands, part, cfg), part

    cfg = autotune.config_for(kern, "bwd_diag", Lq, lambda c: plan(c)[0], launch) \
        or diag_config(kern.spec.block_d, kern.spec.dtype)
    call, part = plan(cfg)
    launch(kern, call)
    T, bands = cfg.block_m, part.shape[1]
    n_kt = -(-Lk // T)
    # band u covers distances (u - n_kt + 1) * T + e - (T - 1), e < 2T - 1: overlap-add the bands in order
    per = torch.zeros(B * H, (bands + 1) * T, dtype=torch.float32, device=q.device)
    per[:, :bands * T] += part[..., :T].reshape(B * H, bands * T)
    per[:, T:] += F.pad(part[..., T:], (0, 1)).reshape(B * H, bands * T)
    first = n_kt * T - Lk  # the position of distance -(Lk - 1)
    per = per[:, first:first + Lq + Lk - 1].reshape(B, H, Lq + Lk - 1)
    if i not in kern.diag_by_batch:  # batches summed in order
        per = per.sum(0, keepdim=True)
    t = tensors[load.param]

    def flat() -> torch.Tensor:
        dist = torch.arange(-(Lk - 1), Lq, device=q.device)
        env = {"b": torch.arange(per.shape[0], device=q.device).view(-1, 1, 1),
               "h": torch.arange(H, device=q.device).view(1, H, 1),
               "q_idx": dist.view(1, 1, -1), "kv_idx": torch.zeros_like(dist).view(1, 1, -1)}
        return torch.as_tensor(flat_index(load, Evaluator(env, tensors, torch.float32, q.device), t),
                               device=q.device).expand(per.shape).reshape(-1)

    def plan() -> Segments | bool:
        """An index of b, h and the distance alone, with its segments (later calls neither evaluate
        nor sort it); False where it reads a tensor (evaluated every call)."""
        if any(isinstance(n, Load) for e in load.index for n in walk(e)):
            return False
        return segments(flat(), t.numel())

    found = kept(kern.diag_index, (i, tuple(per.shape), Lk, tuple(t.shape), q.device), plan, DIAG_INDEX_CACHE)
    if found is False:
        return segment_sum(flat(), per.reshape(-1), t.numel())
    return segment_sum(found.index, per.reshape(-1), t.numel(), found)


def param_grads(prog: Program, q, k, v, do, lse, delta, tensors: dict, scale: float,
                wanted: list[str], kern=None, buffers=None, bm=None) -> dict[str, torch.Tensor]:
    """Gradients for the captured tensors named in `wanted` (floating, requires_grad). With the
    kernels, the backward's buffers and block metadata, Toeplitz reads go through `bwd_diag`."""
    (grad,) = prog.grads
    grads = {n: torch.zeros(tensors[n].numel(), dtype=torch.float32, device=q.device) for n in wanted}
    diagonal = set(kern.diag_loads) if kern is not None else set()
    for i, (load, _) in enumerate(grad.d_loads):
        if i in diagonal and load.param in wanted:
            grads[load.param] += diagonal_grad(kern, i, load, buffers, tensors, scale, bm)
    loads = [(load, d) for i, (load, d) in enumerate(grad.d_loads)
             if load.param in wanted and i not in diagonal]
    if not loads:
        return {n: g.view_as(tensors[n]).to(tensors[n].dtype) for n, g in grads.items()}
    score_expr, mask_expr = prog.as_flex()
    B, H, Lq, _ = q.shape
    Lk = k.shape[2]
    group = H // k.shape[1]
    kf = k.float().repeat_interleave(group, dim=1)
    vf = v.float().repeat_interleave(group, dim=1)
    rows = max(1, min(Lq, ROW_BUDGET // max(1, B * H * Lk)))
    for r0 in range(0, Lq, rows):
        r1 = min(Lq, r0 + rows)
        env = index_env(B, H, Lq, Lk, q.device)
        env["q_idx"] = env["q_idx"][:, :, r0:r1]
        env["score"] = (q[:, :, r0:r1].float() @ kf.transpose(-1, -2)) * scale
        ev = Evaluator(env, tensors, torch.float32, q.device)
        shape = (B, H, r1 - r0, Lk)
        keep = torch.ones(shape, dtype=torch.bool, device=q.device)
        if mask_expr is not None:
            keep = ev(mask_expr).expand(shape)
        z = ev(score_expr).expand(shape)
        row_lse = lse[:, :, r0:r1, None]
        row_lse = torch.where(torch.isneginf(row_lse), math.inf, row_lse)
        p = torch.where(keep, torch.exp(z - row_lse), 0.0)
        dp = do[:, :, r0:r1].float() @ vf.transpose(-1, -2)
        ds = p * (dp - delta[:, :, r0:r1, None])
        for load, d in loads:
            t = tensors[load.param]
            contrib = torch.where(keep, ds * ev(d).expand(shape), 0.0)
            flat = torch.as_tensor(flat_index(load, ev, t), device=q.device)
            # axes the index does not vary along are summed first (a fixed-order torch.sum), so
            # the sort-based scatter sees e.g. one batch instead of B
            axes = tuple(a for a in range(4) if a >= 4 - flat.dim() and flat.shape[a - 4] == 1
                         or a < 4 - flat.dim())
            contrib = contrib.sum(dim=axes, keepdim=True) if axes else contrib
            flat = flat.expand(contrib.shape).reshape(-1)
            grads[load.param] += segment_sum(flat, contrib.reshape(-1), t.numel())
    return {n: g.view(tensors[n].shape).to(tensors[n].dtype) for n, g in grads.items()}
