"""Runtime: wires front ends, passes and evaluation together behind the public API."""
from .variant import Variant, attention, block_mask, compile_variant

__all__ = ["Variant", "attention", "block_mask", "compile_variant"]
