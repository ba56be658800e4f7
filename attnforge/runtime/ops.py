"""PyTorch integration: `attnforge::attention` as a torch.library custom op (with a fake
implementation, so torch.compile traces through it without graph breaks) and its autograd formula."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..codegen import Spec, captured_params, ir_hash
from ..ir.program import Program
from . import launch
from .param_grads import param_grads
from .tables import add_tables


@dataclass(frozen=True)
class Registered:
    prog: Program      # lowered
    source: Program    # as written
    params: tuple[str, ...]


_VARIANTS: dict[str, Registered] = {}


def register(prog: Program, source: Program) -> str:
    key = ir_hash(prog)
    _VARIANTS.setdefault(key, Registered(prog, source, tuple(captured_params(prog))))
    return key


_KERNELS: dict[tuple, launch.Kernels] = {}


def _kernels(key: str, q: Tensor, k: Tensor, v: Tensor) -> launch.Kernels:
    spec = Spec(launch.DTYPES[q.dtype], q.shape[-1], v.shape[-1], q.shape[1] // k.shape[1])
    found = _KERNELS.get((key, spec, q.device))
    if found is None:  # the per-call path stays free of hashing and cache look-ups
        reg = _VARIANTS[key]
        found = _KERNELS[(key, spec, q.device)] = launch.kernels_for(reg.prog, reg.source, spec,
                                                                     q.device)
    return found


def _prepare(key: str, q: Tensor, k: Tensor, v: Tensor, tensors):
    """Kernels, captured tensors by name, and the block metadata for these sizes."""
    kern = _kernels(key, q, k, v)
    named = dict(zip(_VARIANTS[key].params, tensors))
    bm = launch.block_mask_for(kern, q.shape[0], q.shape[1], q.shape[2], k.shape[2], named, q.device)
    # the distance tables after the metadata (whose cache keys on the captured tensors alone)
    return kern, add_tables(kern, named, q.shape[0], q.shape[1], q.shape[2], k.shape[2]), bm


def _forward(q, k, v, tensors, variant, scale, grad: bool = False):
    kern, named, bm = _prepare(variant, q, k, v, tensors)
    return launch.forward(kern, q, k, v, named, scale, bm, grad)


def _backward_impl(do, dlse, q, k, v, out, lse, tensors, wanted, variant, scale):
    kern, named, bm = _prepare(variant, q, k, v, tensors)
    t = launch.backward(kern, do, dlse, q, k, v, out, lse, named, scale, bm)
    names = [n for n, w in zip(_VARIANTS[variant].params, wanted) if w]
    grads = param_grads(kern.prog, q, k, v, t.do, lse, t.delta, named, scale, names, kern, t, bm)
    return t.dq, t.dk, t.dv, [grads[n] for n in names]


@torch.library.custom_op("attnforge::attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, tensors: list[Tensor], variant: str,
                 scale: float) -> tuple[Tensor, Tensor]:
    return _forward(q, k, v, tensors, variant, scale)


@attention_op.register_fake
def _(q, k, v, tensors, variant, scale):
    B, H, Lq, _ = q.shape
    return q.new_empty(B, H, Lq, v.shape[-1]), q.new_empty(B, H, Lq, dtype=torch.float32)


@torch.library.custom_op("attnforge::attention_backward", mutates_args=())
def attention_backward_op(do: Tensor, dlse: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                          lse: Tensor, tensors: list[Tensor], wanted: list[bool], variant: str,
                          scale: float) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    return _backward_impl(do, dlse, q, k, v, out, lse, tensors, wanted, variant, scale)


@attention_backward_op.register_fake
def _(do, dlse, q, k, v, out, lse, tensors, wanted, variant, scale):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            [torch.empty_like(t) for t, w in zip(tensors, wanted) if w])


def _setup_context(ctx, inputs, output):
    q, k, v, tensors, variant, scale = inputs
    out, lse = output
    ctx.variant, ctx.scale, ctx.n = variant, scale, len(tensors)
    ctx.wanted = [t.is_floating_point() and t.requires_grad for t in tensors]
    ctx.save_for_backward(q, k, v, out, lse, *tensors)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, *tensors = ctx.saved_tensors
    dq, dk, dv, dparams = attention_backward_op(dout, dlse, q, k, v, out, lse, tensors, ctx.wanted,
                                                ctx.variant, ctx.scale)
    it = iter(dparams)
    return dq, dk, dv, [next(it) if w else None for w in ctx.wanted], None, None


attention_op.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The same forward and backward as the custom ops, for eager calls: a custom op's first call
    imports torch._dynamo (~1-2 s of a new process), which eager users should not pay."""

    @staticmethod
    def forward(ctx, q, k, v, variant, scale, grad, *tensors):
        out, lse = _forward(q, k, v, list(tensors), variant, scale, grad)
        ctx.variant, ctx.scale = variant, scale
        ctx.wanted = [t.is_floating_point() and t.requires_grad for t in tensors]
        ctx.save_for_backward(q, k, v, out, lse, *tensors)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, *tensors = ctx.saved_tensors
        dq, dk, dv, dparams = _backward_impl(dout, dlse, q, k, v, out, lse, tensors, ctx.wanted,
                                             ctx.variant, ctx.scale)
        it = iter(dparams)
        return (dq, dk, dv, None, None, None, *(next(it) if w else None for w in ctx.wanted))


def run(key: str, q, k, v, tensors: dict, scale: float):
    """(out, lse) through the generated kernels of the variant registered under `key`: the custom
    op under torch.compile (traced through its fake implementation), an autograd.Function eagerly.
    q, k, v keep their strides: kernels take any layout (TMA where it allows, pointers otherwise)."""
    params = [tensors[n].contiguous() for n in _VARIANTS[key].params]
    if torch.compiler.is_compiling():
        return attention_op(q, k, v, params, key, float(scale))
    # whether a backward will follow (inside forward grad mode is off and needs_input_grad ignores it)
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, *params))
    return _Eager.apply(q, k, v, key, float(scale), grad, *params)
