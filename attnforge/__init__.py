"""attnforge: attention variants described as Python mods or DSL text, compiled to fused kernels.

    out = attnforge.attention(q, k, v, score_mod=alibi, mask_mod=causal)
    variant = attnforge.compile(open("sliding.attn").read(), WINDOW=256)
"""
from __future__ import annotations

from .ir.errors import DSLError
from .runtime import Variant, attention
from .runtime.variant import compile_variant as compile  # noqa: A001 - the public name

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


__all__ = ["attention", "compile", "Variant", "DSLError", "and_masks", "or_masks", "__version__"]
