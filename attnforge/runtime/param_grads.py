"""Gradients of learnable captured tensors, deterministic (no float atomics).

For each read `t[index]` of a learnable tensor in the score_mod, `differentiate` gives
d score_mod / d t[index]; its gradient is sum over allowed pairs of dS * that derivative, scattered to
`index`. Scores are recomputed a block of query rows at a time (O(B * H * rows * Lk) memory), and
contributions are reduced with a stable sort and sequential segment sums, in a fixed order, so two
backward runs give identical bits.
"""
from __future__ import annotations

import math

import torch

from ..ir.program import Program
from ..reference import Evaluator, index_env

ROW_BUDGET = 1 << 24  # elements of one recomputed score block


def segment_sum(index: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """out[i] = sum of values[index == i], in a fixed order (stable sort, sequential segments)."""
    order = torch.sort(index, stable=True).indices
    idx, val = index[order], values[order]
    uniq, counts = torch.unique_consecutive(idx, return_counts=True)
    out = torch.zeros(size, dtype=values.dtype, device=values.device)
    if uniq.numel():
        out[uniq] = torch.segment_reduce(val, "sum", lengths=counts)
    return out


def param_grads(prog: Program, q, k, v, do, lse, delta, tensors: dict, scale: float,
                wanted: list[str]) -> dict[str, torch.Tensor]:
    """Gradients for the captured tensors named in `wanted` (floating, requires_grad)."""
    score_expr, mask_expr = prog.as_flex()
    (grad,) = prog.grads
    loads = [(load, d) for load, d in grad.d_loads if load.param in wanted]
    grads = {n: torch.zeros(tensors[n].numel(), dtype=torch.float32, device=q.device) for n in wanted}
    if not loads:
        return {n: g.view_as(tensors[n]).to(tensors[n].dtype) for n, g in grads.items()}
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
            flat = sum(ev(i).to(torch.int64) * s for i, s in zip(load.index, t.stride()))
            flat = torch.as_tensor(flat, device=q.device)
            # axes the index does not vary along are summed first (a fixed-order torch.sum), so
            # the sort-based scatter sees e.g. one batch instead of B
            axes = tuple(a for a in range(4) if a >= 4 - flat.dim() and flat.shape[a - 4] == 1
                         or a < 4 - flat.dim())
            contrib = contrib.sum(dim=axes, keepdim=True) if axes else contrib
            flat = flat.expand(contrib.shape).reshape(-1)
            grads[load.param] += segment_sum(flat, contrib.reshape(-1), t.numel())
    return {n: g.view(tensors[n].shape).to(tensors[n].dtype) for n, g in grads.items()}
