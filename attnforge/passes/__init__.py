"""IR -> IR passes. `lower()` runs them in order; `PIPELINE` is the flat list."""
from __future__ import annotations

import os

from ..ir.program import Program
from ..ir.verify import verify
from .canonicalize import canonicalize
from .classify_blocks import classify_blocks
from .differentiate import differentiate
from .simplify import simplify

PIPELINE = [
    ("canonicalize", canonicalize),
    ("simplify", simplify),
    # analyses read the simplified expressions, so they come last
    ("classify_blocks", classify_blocks),
    ("differentiate", differentiate),
]


def lower(prog: Program, on_pass=None) -> Program:
    """Run every pass; `on_pass(name, program)` sees the input ("input") and each pass's output."""
    verify(prog)
    debug = os.environ.get("ATTN_DEBUG") == "1"
    if on_pass is not None:
        on_pass("input", prog)
    for name, fn in PIPELINE:
        prog = fn(prog)
        if debug:
            verify(prog)
        if on_pass is not None:
            on_pass(name, prog)
    return prog


__all__ = ["PIPELINE", "lower", "canonicalize", "simplify", "classify_blocks", "differentiate"]
