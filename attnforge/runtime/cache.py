"""Generated kernel modules, cached in memory and on disk; lowered programs (the pass pipeline's
output), on disk.

Kernel key: IR hash + specialization + kernel kind + template hash + GPU capability (or "interpret") +
torch/triton versions. Disk entries live in $ATTNFORGE_CACHE_DIR (default ~/.cache/attnforge) and
are written atomically (temp file + rename), so two processes building the same kernel both
succeed; an entry that fails to load is rebuilt, not fatal. Triton caches the compiled binaries of
these sources in its own cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import sys
import tempfile
import threading
from pathlib import Path

import torch
import triton

from .._cachedir import cache_dir
from ..ir.program import Program
from ..passes import code_hash

STATS = {"generated": 0, "disk_hits": 0, "memory_hits": 0, "rebuilt": 0}
_MEMORY: dict[str, object] = {}
_LOCK = threading.Lock()


def device_tag(device: torch.device) -> str:
    if device.type == "meta":
        return "sm90-aot"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return f"sm{major}{minor}"
    return "interpret"


def cache_key(*parts: str) -> str:
    text = "|".join([*parts, torch.__version__, triton.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def interpreting() -> bool:
    return triton.knobs.runtime.interpret


def _import(path: Path, name: str, interpret: bool):
    """Import a generated module. Triton's mode (interpreter or compiler) is fixed per process."""
    if interpret != interpreting():
        raise ValueError("q: CPU tensors run under Triton's interpreter and CUDA tensors under its "
                         "compiler; one process uses one: set TRITON_INTERPRET=1 before importing "
                         "attnforge/triton for CPU tensors, and leave it unset for CUDA tensors")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # triton reads the kernel's source through its module
    spec.loader.exec_module(mod)
    return mod


def on_disk(key: str) -> bool:
    """The module for `key` is in memory or on disk (a process has generated it before)."""
    return key in _MEMORY or _module_path(key).exists()


# Triton keys a kernel's binary with a hash of its source and of every jitted function it calls,
# found by walking their syntax trees on a process's first launch (~10 ms for the Gluon forward).
# A generated module's source is fixed by its key, so those hashes are too: they are kept next to
# the module after its first launch (`keep_jit_hashes`) and set on its functions when a new process
# imports it, which Triton then takes as computed. Missing or unreadable: Triton computes them.
def _module_path(key: str) -> Path:
    return cache_dir() / "kernels" / f"af_{key}.py"


def _hashes_path(key: str) -> Path:
    return _module_path(key).with_suffix(".hashes.json")


def _restore_jit_hashes(key: str, mod) -> None:
    try:
        hashes = json.loads(_hashes_path(key).read_text())
    except (OSError, ValueError):
        return
    for name, h in hashes.items():
        fn = getattr(mod, name, None)
        if isinstance(h, str) and getattr(fn, "hash", "") is None:
            fn.hash = h


_KEPT: set[str] = set()


def keep_jit_hashes(key: str, mod) -> None:
    """After a launch of `mod` (loaded under `key`): its functions' computed hashes, to disk, once."""
    if key in _KEPT:
        return
    _KEPT.add(key)
    hashes = {name: fn.hash for name, fn in vars(mod).items()
              if isinstance(getattr(fn, "hash", None), str) and not fn.hash.startswith("recursion:")
              and hasattr(fn, "cache_key")}
    if hashes and not _hashes_path(key).exists():
        try:
            write_atomic(_hashes_path(key), json.dumps(hashes))
        except OSError:  # a read-only cache dir
            pass


def load_module(key: str, build, interpret: bool):
    """The module for `key`: from memory, from disk, or `build()` (returns source) then disk."""
    with _LOCK:
        if key in _MEMORY:
            STATS["memory_hits"] += 1
            return _MEMORY[key]
        path = _module_path(key)
        name = f"attnforge_kernel_af_{key}"
        mod = None
        if path.exists():
            try:
                mod = _import(path, name, interpret)
                if not hasattr(mod, "grid"):
                    raise ImportError("incomplete kernel module")
                _restore_jit_hashes(key, mod)
                STATS["disk_hits"] += 1
            except Exception:  # noqa: BLE001 - a corrupt entry is rebuilt below
                STATS["rebuilt"] += 1
                mod = None
        if mod is None:
            write_atomic(path, build())
            STATS["generated"] += 1
            mod = _import(path, name, interpret)
        _MEMORY[key] = mod
        return mod


def load_lowered(prog: Program, lower) -> Program:
    """`lower(prog)` (the pass pipeline), kept on disk: a new process reads what an earlier one
    lowered instead of running the passes (sympy's simplifier among them: 0.01-0.15 s a variant, and
    its imports ~0.3 s, on a first compile). Keyed by the program's repr and `passes.code_hash()`;
    an entry that fails to load is rebuilt."""
    key = cache_key(repr(prog), code_hash())
    path = cache_dir() / "lowered" / f"{key}.pkl"
    try:
        out = pickle.loads(path.read_bytes())
        if isinstance(out, Program):
            return out
    except Exception:  # noqa: BLE001 - missing or corrupt: lowered again below
        pass
    out = lower(prog)
    try:
        write_atomic(path, pickle.dumps(out))
    except OSError:  # a read-only cache dir: lowering still works
        pass
    return out


def clear_memory() -> None:
    from . import ops

    with _LOCK:
        _MEMORY.clear()
        ops._KERNELS.clear()
