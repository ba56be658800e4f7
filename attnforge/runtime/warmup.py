"""Start-up work of a process, done once on a thread while the program builds its model.

A new process pays, before its first kernel runs, for work that does not depend on the variant:
Triton keys its disk cache with a hash of its own installation (it reads the 400 MB libtriton.so:
~0.4 s on the H100 machine; attnforge keeps that key on disk, see `_triton_key`), builds or loads
its CUDA driver helpers, imports gluon on its first argument specialization and runs `ptxas
--version` for its backend's key; the DSL parser builds its LALR tables (from lark's disk cache when
warm), and attnforge hashes its passes' and templates' code for its own cache keys. None of that touches the GPU, so
`start()` (called when attnforge is imported) runs it on a daemon thread; the first compile calls
`wait()`, which joins the thread instead of repeating its work. (sympy is not warmed up here: a
warm process finds its lowered programs on disk and never imports it, and importing it on this
thread would hold the interpreter lock while the first call runs.) Nothing here creates a CUDA
context: `import attnforge` stays safe before a fork, and `os.register_at_fork` joins the thread
first, so a child never inherits a half-done import. ATTNFORGE_WARMUP=0 turns the thread off: the
first compile then does the same work itself.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import threading
from pathlib import Path

from .cache import cache_dir, write_atomic

_thread: threading.Thread | None = None
_inline_done = False  # ATTNFORGE_WARMUP=0: the first wait() did the work on its own thread


_SAMPLE = """attention sample(bias: f32[H, R], doc: i32[L]) {
  const W: int = 8
  let near = abs(q_idx - kv_idx) // W < 2.5
  score = where(near, score + bias[h, q_idx % W], 30.0 * tanh(score / 30.0))
  mask = (doc[q_idx] == doc[kv_idx]) & ((b + 1 >= h) | ~(kv_idx < W))
}
"""


def _parser() -> None:
    from ..dsl.parser import lark_parser
    lark_parser().parse(_SAMPLE)  # lark builds each lexer state's scanner on its first use


def _installation_stamp(root: Path) -> str:
    """What Triton's installation key reads (its runtime/cache.py, the compiler and backends
    packages, libtriton), by path, size and modification time: ~250 stat calls instead of reading
    400 MB. Any reinstall or edit changes a size or a time."""
    files = [root / "runtime" / "cache.py", *sorted((root / "_C").glob("libtriton*"))]
    for sub in ("compiler", "backends"):
        files += sorted((root / sub).rglob("*.py"))
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _triton_key() -> None:
    """Triton's installation key (`triton.runtime.cache.triton_key`, part of every compile's cache
    key), computed once per installation and kept in attnforge's cache dir; the module's function is
    replaced by one returning it, as Triton's own compile-warmup workers do."""
    import triton.runtime.cache as tcache

    path = cache_dir() / "triton_key.json"
    stamp = _installation_stamp(Path(tcache.__file__).resolve().parent.parent)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    key = known.get(stamp)
    if key is None:
        key = tcache.triton_key()
        write_atomic(path, json.dumps({**known, stamp: key}))  # (a cache dir shared by installations)
    tcache.triton_key = lambda: key


def _triton_driver() -> None:
    import triton
    triton.runtime.driver.active.utils  # noqa: B018 - builds/loads the driver helpers


def _gluon() -> None:
    importlib.import_module("triton.experimental.gluon.nvidia.hopper")  # what specialization imports


def _hashes() -> None:
    """The hashes keying attnforge's disk caches: the passes' code (with sympy's version, read
    from package metadata: a scan of site-packages) and the templates'."""
    from .. import codegen, passes
    passes.code_hash()
    codegen.template_hash()


def _ptxas_version() -> None:
    """Triton's CUDA backend keys every compile, cache hits included, with `ptxas --version` (two
    subprocesses on a process's first launch, ~5-8 ms of a warm first call, cached per architecture):
    run here for sm_90, the architecture the Gluon forward targets (elsewhere the first launch runs
    them for its own)."""
    from triton.backends.nvidia import compiler

    compiler.get_ptxas_version(90)


def _work() -> None:
    steps = [_parser, _hashes]
    if os.environ.get("TRITON_INTERPRET") != "1":  # the compiler's start-up, not the interpreter's
        steps += [_triton_key, _triton_driver, _gluon, _ptxas_version]
    for step in steps:
        # each step is an optimisation only: where one fails (a Triton that moved a name, no
        # driver), the first call does the same work on its own path and reports a real error there
        try:
            step()
        except Exception:  # noqa: BLE001 - see above
            pass


def start() -> None:
    global _thread
    if _thread is not None or os.environ.get("ATTNFORGE_WARMUP", "1") == "0":
        return
    _thread = threading.Thread(target=_work, name="attnforge-warmup", daemon=True)
    _thread.start()
    os.register_at_fork(before=wait)


def wait() -> None:
    """Block until the start-up work is done (at once when it is); with the thread off, do it here,
    once."""
    global _inline_done
    t = _thread
    if t is None:
        if not _inline_done:
            _inline_done = True
            _work()
    elif t is not threading.current_thread():
        t.join()
