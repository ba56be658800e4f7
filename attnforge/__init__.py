"""attnforge: attention variants described as Python mods or DSL text, compiled to fused kernels.

    out = attnforge.attention(q, k, v, score_mod=alibi, mask_mod=causal)
    variant = attnforge.compile(open("sliding.attn").read(), WINDOW=256)
"""
from __future__ import annotations

import os as _os
import sys as _sys

import torch as _torch

# Without a GPU, kernels run under Triton's interpreter, which must be chosen before triton is
# first imported (triton.language's own helpers are built for one mode or the other).
if "triton" not in _sys.modules and "TRITON_INTERPRET" not in _os.environ \
        and not _torch.cuda.is_available():
    _os.environ["TRITON_INTERPRET"] = "1"

from .ir.errors import DSLError  # noqa: E402
from .runtime import Variant, attention, block_mask  # noqa: E402
from .runtime.autotune import autotune  # noqa: E402
from .runtime.variant import compile_variant as compile  # noqa: A001,E402 - the public name
from .runtime import warmup as _warmup  # noqa: E402

_warmup.start()

__version__ = "0.1.0"


def and_masks(*mask_mods):
    """The intersection of mask_mods (works for FlexAttention too)."""
    _check_callables(mask_mods)

    def and_mask(b, h, q_idx, kv_idx):
        result = mask_mods[0](b, h, q_idx, kv_idx)
        for m in mask_mods[1:]:
            result = result & m(b, h, q_idx, kv_idx)
        return result

    return and_mask


def or_masks(*mask_mods):
    """The union of mask_mods (works for FlexAttention too)."""
    _check_callables(mask_mods)

    def or_mask(b, h, q_idx, kv_idx):
        result = mask_mods[0](b, h, q_idx, kv_idx)
        for m in mask_mods[1:]:
            result = result | m(b, h, q_idx, kv_idx)
        return result

    return or_mask


def _check_callables(mods) -> None:
    if not mods or not all(callable(m) for m in mods):
        raise ValueError(f"mask_mods: expected one or more callables, got {mods!r}")


__all__ = ["attention", "compile", "Variant", "DSLError", "and_masks", "or_masks", "block_mask", "autotune",
           "__version__"]
