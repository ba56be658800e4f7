"""IR -> IR passes. `lower()` runs them in order; `PIPELINE` is the flat list.

The pass modules are imported on first use, and sympy (which the simplifier and the differentiator
stand on) only for a program with float arithmetic in its score: a process whose lowered programs
come from the disk cache (`runtime/cache.py`), or whose variants are masks alone, never imports it.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
from functools import cache
from pathlib import Path

from ..ir.program import Program
from ..ir.verify import verify

PASSES = ("canonicalize", "simplify", "classify_blocks", "differentiate")  # analyses come last:
# they read the simplified expressions. Each is a function of its module's name.


def _load() -> list:
    """Import the pass modules; their functions take the package's names (an imported submodule
    binds its module to the name; the function is what `from attnforge.passes import simplify`
    means)."""
    fns = [getattr(importlib.import_module(f".{name}", __name__), name) for name in PASSES]
    globals().update(zip(PASSES, fns))
    return list(zip(PASSES, fns))


def __getattr__(name: str):
    if name == "PIPELINE":
        return _load()
    if name in PASSES:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def code_hash() -> str:
    """Hash of everything that shapes a lowered program: the passes' and the IR's code and sympy's
    version (read without importing sympy); keys the disk cache of lowered programs."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256(importlib.metadata.version("sympy").encode())
    for f in sorted([*(root / "passes").glob("*.py"), *(root / "ir").glob("*.py")]):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def lower(prog: Program, on_pass=None) -> Program:
    """Run every pass; `on_pass(name, program)` sees the input ("input") and each pass's output."""
    verify(prog)
    debug = os.environ.get("ATTN_DEBUG") == "1"
    if on_pass is not None:
        on_pass("input", prog)
    for name, fn in _load():
        prog = fn(prog)
        if debug:
            verify(prog)
        if on_pass is not None:
            on_pass(name, prog)
    return prog


__all__ = ["PIPELINE", "code_hash", "lower", "canonicalize", "simplify", "classify_blocks", "differentiate"]
