"""Runtime: kernel cache (memory, disk, corruption, concurrency), no recompiles across lengths,
torch.compile integration, inspection (kernel sources, CLI, block masks) and the sm_90 AOT build."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import attnforge
from attnforge.runtime import cache
from conftest import EXAMPLES, ROOT

CAUSAL = "attention c() { mask = q_idx >= kv_idx }"


def _qkv(L, B=1, H=2, D=16, grad=False):
    return [torch.randn(B, H, L, D, requires_grad=grad) for _ in range(3)]


def test_new_lengths_do_not_recompile(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    cache.clear_memory()
    v = attnforge.compile("attention w() { mask = (q_idx >= kv_idx) & (q_idx - kv_idx < 50) }")
    before = dict(cache.STATS)
    for L in (40, 130, 257):
        q, k, vv = _qkv(L, grad=True)
        v(q, k, vv).sum().backward()
    generated = cache.STATS["generated"] - before["generated"]
    assert generated == 3  # fwd, bwd_preprocess, bwd (dK/dV and dQ; no bwd_diag: nothing learnable), once
    from attnforge.runtime import ops

    assert sum(1 for key in ops._KERNELS if key[0] == v._key) == 1  # one specialization in use
    for kind in ("fwd", "bwd", "bwd_dkdv", "bwd_dq"):
        src = v.kernel_source(kind)
        assert '"Lq", "Lk"' in src  # lengths are never specialized on by Triton either


def test_disk_cache_hit_and_corrupt_entry_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    cache.clear_memory()
    v = attnforge.compile(CAUSAL)
    q, k, vv = _qkv(33)
    ref = v(q, k, vv)
    files = sorted((tmp_path / "kernels").glob("af_*_fwd.py"))
    # modules are imported (and written) on their first launch: a forward writes the forward's only
    assert len(files) == 1 and len(list((tmp_path / "kernels").glob("af_*.py"))) == 1
    cache.clear_memory()
    hits = cache.STATS["disk_hits"]
    assert torch.equal(v(q, k, vv), ref)
    assert cache.STATS["disk_hits"] == hits + 1
    files[0].write_text("this is not python (")
    cache.clear_memory()
    rebuilt = cache.STATS["rebuilt"]
    assert torch.equal(v(q, k, vv), ref)
    assert cache.STATS["rebuilt"] == rebuilt + 1
    assert "def attn_fwd" in files[0].read_text()


def test_two_processes_compile_the_same_variant(tmp_path):
    script = textwrap.dedent(f"""
        import torch, attnforge
        v = attnforge.compile({CAUSAL!r})
        q, k, vv = (torch.randn(1, 2, 70, 16, requires_grad=True) for _ in range(3))
        v(q, k, vv).sum().backward()
        print("ok")
    """)
    env = {**os.environ, "ATTNFORGE_CACHE_DIR": str(tmp_path), "TRITON_INTERPRET": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0 and out.strip() == "ok", err


def test_start_up_work_runs_on_a_thread_that_a_fork_joins(tmp_path):
    """Import starts the variant-independent start-up work (parser tables; Triton's installation
    key and driver on a GPU) on a thread; a fork waits for it, so no child inherits it half done;
    ATTNFORGE_WARMUP=0 starts nothing."""
    script = textwrap.dedent("""
        import os, sys, attnforge
        from attnforge.runtime import warmup
        if os.environ["ATTNFORGE_WARMUP"] == "0":
            assert warmup._thread is None
            sys.exit(0)
        assert warmup._thread.name == "attnforge-warmup"
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0 and not warmup._thread.is_alive()
        warmup.wait()
        from attnforge.dsl.parser import lark_parser
        assert lark_parser() is lark_parser()
    """)
    from attnforge.runtime import warmup

    attnforge.compile(warmup._SAMPLE)  # the program it parses to build lark's scanners is valid
    for on in ("1", "0"):
        env = {**os.environ, "ATTNFORGE_CACHE_DIR": str(tmp_path), "ATTNFORGE_WARMUP": on}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr


def test_tritons_installation_key_is_kept_on_disk(tmp_path, monkeypatch):
    """The start-up thread computes Triton's installation key once per installation (it hashes
    libtriton, ~0.4-1 s) and keeps it in the cache dir: the next process reads it, and Triton's
    compile keys see the same value; another installation (a changed file stamp) computes it again."""
    import triton.runtime.cache as tcache
    from attnforge.runtime import warmup

    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    real = tcache.triton_key
    monkeypatch.setattr(tcache, "triton_key", real)  # restored after the test
    warmup._triton_key()
    assert tcache.triton_key() == real() and (tmp_path / "triton_key.json").exists()

    def must_not_hash():
        raise AssertionError("hashed the installation again")

    monkeypatch.setattr(tcache, "triton_key", must_not_hash)
    warmup._triton_key()  # a new process: from disk
    assert tcache.triton_key() == real()
    calls = []
    monkeypatch.setattr(tcache, "triton_key", lambda: calls.append(1) or "other-key")
    monkeypatch.setattr(warmup, "_installation_stamp", lambda root: "another installation")
    warmup._triton_key()
    assert calls == [1] and tcache.triton_key() == "other-key"


def test_lowered_programs_are_kept_on_disk(tmp_path, monkeypatch):
    """A new process reads a program's pass pipeline output from disk instead of running the passes;
    a corrupt entry is lowered again."""
    from attnforge.passes import lower
    from attnforge.runtime.cache import load_lowered

    prog = attnforge.compile(str(EXAMPLES / "softcap.attn")).program
    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    calls = []

    def counted(p):
        calls.append(p)
        return lower(p)

    first = load_lowered(prog, counted)
    again = load_lowered(prog, counted)
    assert len(calls) == 1 and again == first and repr(again) == repr(lower(prog))
    (entry,) = (tmp_path / "lowered").iterdir()
    entry.write_bytes(b"not a pickle")
    assert load_lowered(prog, counted) == first and len(calls) == 2


def test_a_warm_process_never_imports_sympy(tmp_path):
    """Once a variant's lowered program and kernels are on disk, a new process compiles and runs it
    (forward and backward) without importing sympy (0.3-3 s of a start-up; `import attnforge` does
    not import it either)."""
    script = textwrap.dedent("""
        import sys, torch, attnforge
        assert "sympy" not in sys.modules
        v = attnforge.compile("attention w() { score = 20.0 * tanh(score / 20.0); mask = q_idx >= kv_idx }")
        q = torch.randn(1, 2, 70, 16, requires_grad=True)
        v(q, q, q).sum().backward()
        print("sympy" in sys.modules)
    """)
    env = {**os.environ, "ATTNFORGE_CACHE_DIR": str(tmp_path), "TRITON_INTERPRET": "1"}
    runs = [subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr
    assert [r.stdout.split()[-1] for r in runs] == ["True", "False"]


def test_masks_alone_lower_without_sympy(tmp_path):
    """A variant without float arithmetic in its score (masks only: causal, windows, documents)
    lowers, cold, without importing sympy (~0.4-0.6 s of a first call); its derivative is 1."""
    script = textwrap.dedent("""
        import sys, attnforge
        v = attnforge.compile("attention d(doc: i32[L]) { mask = (doc[q_idx] == doc[kv_idx]) & (q_idx - kv_idx < 9) }")
        print(repr(v.lowered.grads[0].d_score), "sympy" in sys.modules)
        attnforge.compile("attention a() { score = score - 0.5 * abs(q_idx - kv_idx) }").lowered
        print("sympy" in sys.modules)
    """)
    env = {**os.environ, "ATTNFORGE_CACHE_DIR": str(tmp_path), "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Const(value=1.0,", "dtype='float')", "False", "True"]


def test_a_fork_waits_for_compiles_under_way():
    """The backward's kernels compile on threads that end with their compiles; a fork in the
    meantime waits for them (here with stand-in jobs: one slow, one failing)."""
    script = textwrap.dedent("""
        import os, threading, time
        from concurrent.futures import ThreadPoolExecutor
        from attnforge.runtime import launch, warmup
        warmup.wait()
        pool = ThreadPoolExecutor(max_workers=2)
        jobs = [pool.submit(time.sleep, 0.5), pool.submit(lambda: 1 / 0)]
        pool.shutdown(wait=False)
        for job in jobs:
            launch._PENDING.add(job)
            job.add_done_callback(launch._PENDING.discard)
        t = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert time.perf_counter() - t >= 0.4 and not launch._PENDING
        time.sleep(0.1)
        assert threading.active_count() == 1, threading.enumerate()
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_torch_compile_traces_through_without_graph_breaks():
    variant = attnforge.compile(str(EXAMPLES / "rel_bias.attn"))
    bias = (torch.randn(4, 511) * 0.1).requires_grad_()

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)

        def forward(self, x):
            q = self.proj(x)
            return variant(q, x, x, rel_bias=bias).sum()

    model = Block()
    x = torch.randn(1, 4, 40, 16)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    loss = compiled(x)
    loss.backward()
    eager = model(x)
    assert torch.allclose(loss, eager, atol=1e-5)
    assert bias.grad is not None and bias.grad.abs().sum() > 0


def test_kernel_sources_read_like_code():
    v = attnforge.compile(str(EXAMPLES / "alibi.attn"))
    for kind in ("fwd", "bwd_preprocess", "bwd_dkdv", "bwd_dq"):
        src = v.kernel_source(kind)
        assert src.startswith(f"# attnforge generated kernel: {kind}")
        assert "# IR hash: " in src and "score = score + (kv_idx - q_idx) * slope" not in src
        assert "#   attention alibi_causal()" in src
        compile(src, f"<{kind}>", "exec")
    assert "tl.exp2" in v.kernel_source("fwd")
    with pytest.raises(ValueError, match="kind: expected one of"):
        v.kernel_source("decode")


@pytest.mark.parametrize("dtype, device, fast", [(torch.bfloat16, "cuda", True), (torch.float16, "cuda", True),
                                                 (torch.float32, "cuda", False), (torch.bfloat16, "cpu", False)])
def test_kernel_source_shows_fast_math_where_it_runs(dtype, device, fast):
    v = attnforge.compile(str(EXAMPLES / "softcap.attn"))
    assert f"FAST_MATH = tl.constexpr({fast})" in v.kernel_source("fwd", dtype=dtype, device=device)


@pytest.mark.parametrize("source,dtype,d,expected", [
    ("attention c() { mask = q_idx >= kv_idx }", "bfloat16", 128, True),
    ("attention c() { mask = q_idx >= kv_idx }", "float16", 72, True),      # padded to 128 (TMA zero-fills)
    ("attention c() { mask = q_idx >= kv_idx }", "bfloat16", 64, True),
    ("attention c() { mask = q_idx >= kv_idx }", "bfloat16", 40, True),      # padded to 64
    ("attention c() { mask = q_idx >= kv_idx }", "bfloat16", 32, False),
    ("attention c() { mask = q_idx >= kv_idx }", "bfloat16", 256, False),
    ("attention c() { mask = q_idx >= kv_idx }", "float32", 128, False),
    ("attention s() { score = sigmoid(score) }", "bfloat16", 128, False),  # Gluon has no sigmoid
    ("attention r() { score = float(q_idx - kv_idx) }", "bfloat16", 128, True),
])
def test_which_variants_the_sm90_forward_covers(source, dtype, d, expected):
    from attnforge.codegen import Spec, sm90_forward

    assert sm90_forward(attnforge.compile(source).lowered, Spec(dtype, d, d, 1)) is expected


def test_the_sm90_forward_needs_tma_aligned_rows_in_out_too():
    """The Gluon forward reads Q, K, V and writes O through TMA descriptors, which need 16-byte
    aligned row strides: a V sliced from a wider tensor (aligned) whose head dim (100) leaves the
    output's rows unaligned (200 bytes) takes the Triton forward."""
    from attnforge.codegen import Spec
    from attnforge.runtime.blocks import meta_block_mask
    from attnforge.runtime.launch import fwd_call, kernels_for

    v = attnforge.compile(CAUSAL)
    kern = kernels_for(v.lowered, v.program, Spec("bfloat16", 128, 100, 1), torch.device("meta"))
    kern.sm90 = kern.tma = True
    q, k = (torch.empty(1, 2, 256, 128, dtype=torch.bfloat16, device="meta") for _ in range(2))
    lse = torch.empty(1, 2, 256, dtype=torch.float32, device="meta")
    bm = meta_block_mask(256, 256, 128, 128)
    for dv_alloc, kind in ((100, "fwd"), (104, "fwd_sm90")):
        vv = torch.empty(1, 2, 256, 128, dtype=torch.bfloat16, device="meta")[..., :100]
        out = torch.empty(1, 2, 256, dv_alloc, dtype=torch.bfloat16, device="meta")[..., :100]
        assert fwd_call(kern, q, k, vv, out, lse, {}, 0.1, bm).kind == kind


def test_cli_inspect_triton_and_blocks():
    run = [sys.executable, "-m", "attnforge.cli", "inspect", str(EXAMPLES / "alibi.attn")]
    out = subprocess.run(run + ["--stage", "triton"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # fwd, the sm_90 Gluon fwd, bwd preprocess, dK/dV, dQ, bwd_diag
    assert out.stdout.count("# attnforge generated kernel:") == 7 and "def attn_fwd(" in out.stdout
    assert "# attnforge generated kernel: fwd (Hopper, Gluon)" in out.stdout
    out = subprocess.run(run + ["--stage", "blocks", "--length", "512"], capture_output=True,
                         text=True, timeout=120)
    assert "block rule `mask`" in out.stdout and "|.   |" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "attnforge.cli", "inspect", "-"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0


def test_block_mask_object(tmp_path):
    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    bm = attnforge.block_mask(causal, 2, 4, 512, 512)
    dense = bm.to_dense()
    assert dense.shape == (1, 1, 4, 4)  # the mask reads neither b nor h
    assert torch.equal(dense[0, 0], torch.tensor([[1, 0, 0, 0], [2, 1, 0, 0], [2, 2, 1, 0],
                                                   [2, 2, 2, 1]], dtype=torch.int8))
    assert bm.sparsity() == pytest.approx(37.5)
    bm.save(tmp_path / "causal.png")
    assert (tmp_path / "causal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "sparsity 37.5%" in bm.show()


def test_block_metadata_is_built_from_tiles_not_the_dense_mask():
    """A 131072-token causal + window mask: O(tiles) work, so this is fast even on CPU."""
    v = attnforge.compile("attention w() { mask = (q_idx >= kv_idx) & (q_idx - kv_idx < 4096) }")
    bm = v.block_mask(1, 1, 131072, 131072)
    assert bm.kv.num.shape == (1, 1, 1024)
    assert int(bm.kv_full.num.max()) == 31 and int(bm.kv.num.max()) == 2


AOT = """
import json, sys, torch, attnforge
from dataclasses import asdict
from attnforge.codegen.configs import SM90_FWD_64, SM90_FWD_64_N64, SM90_FWD_64_M192, SM90_FWD_M64, SM90_FWD_N64, SM90_FWD
from attnforge.codegen import plain_scores
from attnforge.codegen.configs import BWD_64_CAPPED, BWD_64_CAPPED_S2
from attnforge.runtime.aot import compile_report
for name in sys.argv[1:]:
    v = attnforge.compile(f"{root}/examples/{{name}}.attn")
    for r in compile_report(v, torch.bfloat16, 128):
        print(json.dumps({{"variant": name, "d": 128, **asdict(SM90_FWD), **r}}))
    if name == sys.argv[1]:  # the Gluon forward's other tiles: head dim 64, short programs
        for d, cfg in ((64, SM90_FWD_64), (64, SM90_FWD_64_N64), (64, SM90_FWD_64_M192), (128, SM90_FWD_M64),
                       (128, SM90_FWD_N64)):
            for r in compile_report(v, torch.bfloat16, d, kinds=("fwd_sm90",), sm90=cfg):
                print(json.dumps({{"variant": name, "d": d, **asdict(cfg), **r}}))
        # the one-launch backward's default at head dim 64: registers capped (three programs per SM)
        cfg = BWD_64_CAPPED if plain_scores(v.lowered) else BWD_64_CAPPED_S2
        for r in compile_report(v, torch.bfloat16, 64, kinds=("bwd",)):
            print(json.dumps({{"variant": name, "d": 64, **asdict(cfg), **r}}))
"""


SIGNATURE = """
import json, torch, attnforge
from attnforge.runtime import aot
from attnforge.runtime.launch import fwd_call, kernels_for
from attnforge.codegen import Spec
from attnforge.runtime.blocks import meta_block_mask
v = attnforge.compile("attention c() { mask = q_idx >= kv_idx }")
kern = kernels_for(v.lowered, v.program, Spec("bfloat16", 64, 64, 1), torch.device("meta"))
m = lambda *s, dt=torch.bfloat16: torch.empty(*s, dtype=dt, device="meta")
q, lse = m(2, 2, 1024, 64), m(2, 2, 1024, dt=torch.float32)
bm = meta_block_mask(1024, 1024, 128, 128)
fn = kern.modules["fwd"].attn_fwd
sig, consts, attrs = aot._signature(fn, fwd_call(kern, q, q, q, q, lse, {}, 0.125, bm))
ones = sorted(n for n, c in consts.items() if type(c) is int and c == 1)
print(json.dumps({"order": list(sig) == fn.arg_names, "ones": ones,
                  "divisible": sorted(fn.arg_names[i] for (i,) in attrs)}))
"""


def test_aot_specializes_arguments_as_the_jit_does():
    """Unit strides become constants, pointers and multiples of 16 divisible by 16, except the
    arguments the kernel asks Triton not to specialize (lengths)."""
    import json

    env = {**os.environ, "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", SIGNATURE], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["order"]
    assert {"s_qd", "s_kd", "s_vd", "s_od"} <= set(got["ones"])
    assert {"Q", "K", "V", "O", "LSE", "s_qm", "s_kn", "s_qh"} <= set(got["divisible"])
    assert not {"Lq", "Lk", "N_SPARSE"} & set(got["divisible"] + got["ones"])


def test_short_program_tile_that_does_not_compile_falls_back_to_the_long_one(monkeypatch):
    """The Gluon forward's short-program tiles run on fewer registers; where ptxas cannot fit a
    variant's score in them (PTXASError), the variant takes the long-program tile from then on, and
    the Triton forward only where that fails too. (Launches are stubbed: no GPU here.)"""
    import warnings

    import triton

    from attnforge.runtime import launch, ops

    monkeypatch.setattr(launch, "_hopper", lambda device: True)
    monkeypatch.setattr(launch, "_tma_ok", lambda *a: True)
    monkeypatch.setattr(launch, "interpreting", lambda: False)
    monkeypatch.setattr(ops, "_KERNELS", {})
    for fails in ({"short"}, {"short", "long"}):
        ran = []

        def stub(kern, call, fallback=True, fails=fails):
            tile = "short" if call.options.get("maxnreg") else "long"
            ran.append(tile if call.kind == "fwd_sm90" else call.kind)
            if call.kind == "fwd_sm90" and tile in fails:
                raise triton.runtime.errors.PTXASError("ptxas fatal: Insufficient registers")

        monkeypatch.setattr(launch, "launch", stub)
        ops._KERNELS.clear()
        v = attnforge.compile("examples/document.attn")
        ids = torch.arange(512, dtype=torch.int32) // 128  # one key tile per query tile: short programs
        q = torch.randn(1, 2, 512, 128, dtype=torch.bfloat16)
        with torch.no_grad(), warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            v(q, q, q, document_id=ids)
            v(q, q, q, document_id=ids)
        if fails == {"short"}:  # the long tile, silently (a matter of speed only)
            assert ran == ["short", "long", "long"] and not warned
        else:
            assert ran == ["short", "long", "fwd", "fwd"]
            assert [w.category for w in warned] == [RuntimeWarning] and "Triton forward" in str(warned[0].message)


def test_tma_descriptors_are_copies_of_a_checked_one():
    """The Gluon forward's host descriptors: made and checked once per dtype, shape, strides and box,
    then copied with each call's tensor as the base; the cache keeps no tensor alive."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    from attnforge.runtime import direct, launch

    a, b = (torch.randn(2, 3, 200, 64, dtype=torch.bfloat16) for _ in range(2))
    first, second = launch._descriptor(a, 64, 64), launch._descriptor(b, 64, 64)
    fresh = TensorDescriptor(b, list(b.shape), list(b.stride()), [1, 1, 64, 64], launch._nvmma_layout(b.dtype, 64, 64))
    assert first.base is a and second.base is b and type(second) is TensorDescriptor
    ours = {n: v for n, v in vars(second).items() if n != "base"}
    assert ours.pop(direct.SIG_ATTR) == (b.dtype, b.shape, b.stride(), 64, 64)  # (a direct launch's key)
    assert ours == {n: v for n, v in vars(fresh).items() if n != "base"}
    assert all(d.base is None for d in launch._DESCRIPTORS.values())
    assert launch._descriptor(b.transpose(1, 2), 64, 64).strides == list(b.transpose(1, 2).stride())


def test_row_tiles_and_the_gluon_forwards_default_tile():
    """Programs' mean length in key tiles, from the block metadata; the Gluon forward takes the tiles
    that let programs share an SM where programs are short, deciding once per variant (a new length
    compiles nothing)."""
    from attnforge.codegen.configs import (SM90_FWD, SM90_FWD_64, SM90_FWD_64_M192, SM90_FWD_64_N64, SM90_FWD_M64,
                                           SM90_TRITON_SCORE_MOD_64, sm90_config)
    from attnforge.runtime import launch

    causal = attnforge.compile("attention c() { mask = q_idx >= kv_idx }")
    bm = causal.block_mask(1, 1, 1000, 1000)  # 8 query tiles of 1..8 key tiles
    assert bm.row_tiles() == pytest.approx(4.5)
    doc = attnforge.compile("examples/document.attn")
    ids = torch.arange(1024, dtype=torch.int32) // 256  # 4 documents of 2 tiles: rows of 1 and 2 tiles
    assert doc.block_mask(1, 1, 1024, 1024, document_id=ids).row_tiles() == pytest.approx(1.5)
    assert sm90_config(128, 1.5) == SM90_FWD_M64 and sm90_config(64, 3.9) == SM90_FWD_64_N64
    assert sm90_config(128, 4.5) == SM90_FWD and sm90_config(64, 8.5) == SM90_FWD_64_N64
    # long programs at head dim 64: three consumer groups for plain scores (no score_mod), the Triton
    # forward's tile (K and V through pointers) with a score_mod
    assert sm90_config(64, 32.5, plain=True) == SM90_FWD_64_M192 == sm90_config(64, None, plain=True)
    # that reads no tensor (the Triton forward's distance-table reads are slow)
    assert sm90_config(64, 32.5, reads=False) == SM90_TRITON_SCORE_MOD_64 == sm90_config(64, None, reads=False)
    assert not SM90_TRITON_SCORE_MOD_64.sm90 and sm90_config(64, 32.5) == SM90_FWD_64
    assert sm90_config(64, 8.5, plain=True) == SM90_FWD_64_N64 and sm90_config(128, 32.5, plain=True) == SM90_FWD

    class Kern:
        row_tiles = None

    assert launch._row_tiles(Kern, bm) == pytest.approx(4.5)
    assert launch._row_tiles(Kern, causal.block_mask(1, 1, 4096, 4096)) == pytest.approx(4.5)  # kept


def test_the_backwards_default_tile_follows_the_forwards_program_length():
    """At head dim 64, short programs (as the forward decides) load through pointers (no descriptor
    per program); long ones, unknown lengths and head dim 128 keep the TMA tile. Scores whose
    backward takes no score_mod derivative run on 168 registers (three programs per SM): three
    stages for plain scores of one query head per kv head, two otherwise, pointers when short."""
    from attnforge.codegen.configs import (BWD_64_CAPPED, BWD_64_CAPPED_S2, BWD_64_CAPPED_SHORT, BWD_64_SHORT,
                                           BWD_CAPPED_SHORT_ROWS_64, BWD_SHORT_ROWS_64, bwd_config, tile_config)

    # a score_mod with a derivative (softcap): no register cap
    assert bwd_config(64, 4.5) == BWD_64_SHORT == bwd_config(48, BWD_SHORT_ROWS_64) and not BWD_64_SHORT.tma
    long = tile_config("bwd", 64)
    assert bwd_config(64, 16.0) == bwd_config(64, 32.5) == long == bwd_config(64, None) and long.tma
    assert BWD_64_SHORT == dataclasses.replace(tile_config("bwd", 64), tma=False)  # the same tile otherwise
    assert not long.maxnreg and not BWD_64_SHORT.maxnreg
    # plain scores, or a linear score_mod (ALiBi, a bias; also GQA's plain scores)
    assert bwd_config(64, 32.5, plain=True) == bwd_config(64, None, plain=True) == BWD_64_CAPPED
    assert bwd_config(64, 32.5, linear=True) == bwd_config(64, None, linear=True) == BWD_64_CAPPED_S2
    assert bwd_config(64, 4.5, plain=True) == bwd_config(32, BWD_CAPPED_SHORT_ROWS_64, linear=True) \
        == BWD_64_CAPPED_SHORT
    assert bwd_config(64, 8.5, plain=True) == BWD_64_CAPPED and bwd_config(64, 8.5, linear=True) == BWD_64_CAPPED_S2
    assert {c.maxnreg for c in (BWD_64_CAPPED, BWD_64_CAPPED_S2, BWD_64_CAPPED_SHORT)} == {168}
    assert (BWD_64_CAPPED.num_stages, BWD_64_CAPPED_S2.num_stages, BWD_64_CAPPED_SHORT.tma) == (3, 2, False)
    for flags in ({}, {"plain": True}, {"linear": True}):
        assert bwd_config(128, 1.5, **flags) == bwd_config(128, 32.5, **flags) == tile_config("bwd", 128)
    # float32 inputs: no cap (their tiles would spill kilobytes)
    assert bwd_config(64, 32.5, plain=True, dtype="float32") == long
    assert bwd_config(64, 4.5, linear=True, dtype="float32") == BWD_64_SHORT
    assert bwd_config(64, 32.5, plain=True, dtype="float16") == BWD_64_CAPPED
    # score_mods reading captured tensors (a distance table) keep the uncapped tiles
    assert bwd_config(64, 32.5, linear=True, reads=True) == long
    assert bwd_config(64, 32.5, plain=True, reads=True) == BWD_64_CAPPED


def test_a_tiles_register_cap_reaches_the_launch_options():
    from attnforge.codegen import TileConfig
    from attnforge.runtime import launch

    assert launch.launch_options(TileConfig(64, 64, 4, 2, maxnreg=168)) == {"num_warps": 4, "num_stages": 2,
                                                                     "maxnreg": 168}
    assert "maxnreg" not in launch.launch_options(TileConfig(64, 64, 4, 2))


def test_linear_scores_are_those_whose_derivative_is_one():
    from attnforge.codegen import linear_scores, plain_scores, score_reads

    alibi = attnforge.compile("attention a() { score = score + (kv_idx - q_idx) * 0.5\n mask = q_idx >= kv_idx }")
    bias = attnforge.compile("attention b(bias: f32[H, R]) { score = score + bias[h, q_idx - kv_idx + 7] }")
    softcap = attnforge.compile("attention s() { score = 30.0 * tanh(score / 30.0) }")
    scaled = attnforge.compile("attention t() { score = 2.0 * score }")
    causal = attnforge.compile(CAUSAL)
    assert [linear_scores(v.lowered) for v in (causal, alibi, bias, softcap, scaled)] == [True, True, True, False, False]
    assert [plain_scores(v.lowered) for v in (causal, alibi, bias)] == [True, False, False]
    document = attnforge.compile("attention d(doc: i32[L]) { mask = doc[q_idx] == doc[kv_idx] }")
    # (a mask's reads are not the score_mod's)
    assert [score_reads(v.lowered) for v in (causal, alibi, bias, document)] == [False, False, True, False]


def test_small_tiles_walk_block_metadata_of_their_own_size(monkeypatch):
    """Kernels whose tiles are smaller than the variant's 128 x 128 metadata walk metadata in tiles of
    their own size: a causal diagonal tile's empty quarter is skipped and its full quarter runs without
    the mask. 128-tile kernels, and grids past FINE_MAX_TILES, keep the variant's metadata; a call
    carries the sizes of the metadata it walks."""
    from attnforge.codegen import Spec, TileConfig
    from attnforge.runtime import launch

    v = attnforge.compile(CAUSAL)
    kern = launch.kernels_for(v.lowered, v.program, Spec("float32", 16, 16, 1), torch.device("cpu"))
    bm = launch.block_mask_for(kern, 1, 2, 256, 256, {}, torch.device("cpu"))
    assert (int(bm.kv.num.sum()), int(bm.kv_full.num.sum())) == (2, 1)  # 12 quarters of 64 x 64
    fine = launch.tile_block_mask(kern, bm, 1, 2, torch.device("cpu"), {}, TileConfig(64, 64, 4, 2))
    assert (fine.block_m, fine.block_n) == (64, 64)
    assert (int(fine.kv.num.sum()), int(fine.kv_full.num.sum())) == (4, 6)  # 2 quarters skipped
    assert (int(fine.q.num.sum()), int(fine.q_full.num.sum())) == (4, 6)
    assert launch.tile_block_mask(kern, bm, 1, 2, torch.device("cpu"), {}, TileConfig(64, 64, 4, 2)) is fine
    assert launch.tile_block_mask(kern, bm, 1, 2, torch.device("cpu"), {}, TileConfig(128, 128, 8, 2)) is bm
    rect = launch.tile_block_mask(kern, bm, 1, 2, torch.device("cpu"), {}, TileConfig(128, 64, 4, 2))
    assert (rect.block_m, rect.block_n) == (128, 64)
    monkeypatch.setattr(launch, "FINE_MAX_TILES", 8)  # 4 x 4 tiles of 64: over the limit
    assert launch.tile_block_mask(kern, bm, 1, 2, torch.device("cpu"), {}, TileConfig(64, 64, 4, 2)) is bm
    # 192-row tiles (three consumer groups) are not made of 128s: metadata of their own at any size
    bm384 = launch.block_mask_for(kern, 1, 2, 384, 384, {}, torch.device("cpu"))
    coarse = launch.tile_block_mask(kern, bm384, 1, 2, torch.device("cpu"), {}, TileConfig(192, 128, 4, 3))
    assert (coarse.block_m, coarse.block_n) == (192, 128)
    # rows 0-191: keys 0-127 and 128-255 partial; rows 192-383: keys 0-127 full, the other two partial
    assert coarse.kv.num.flatten().tolist() == [2, 2] and coarse.kv_full.num.flatten().tolist() == [0, 1]
    monkeypatch.undo()
    q = torch.randn(1, 2, 256, 16)
    lse = torch.empty(1, 2, 256)
    call = launch.fwd_call(kern, q, q, q, torch.empty_like(q), lse, {}, 0.25, bm, TileConfig(64, 64, 4, 2))
    assert (call.constexprs["SPARSE_M"], call.constexprs["SPARSE_N"]) == (64, 64)


def test_block_metadata_cache_is_bounded_in_bytes(monkeypatch):
    """The metadata cache drops its least recently used entries past _CACHE_BYTES (counting what an
    entry derived: other tile sizes), always keeping the newest."""
    from attnforge.runtime import blocks, launch

    v = attnforge.compile(CAUSAL)
    kern = launch.kernels_for(v.lowered, v.program, attnforge.codegen.Spec("float32", 16, 16, 1),
                              torch.device("cpu"))
    monkeypatch.setattr(blocks, "_CACHE", blocks.OrderedDict())
    first = launch.block_mask_for(kern, 1, 1, 1024, 1024, {}, torch.device("cpu"))
    fine = first.in_tiles(kern.prog, 1, 1, {}, 64, 64, torch.device("cpu"))
    assert first.nbytes() == fine.nbytes() + sum(t.num.nbytes + t.ind.nbytes for t in (
        first.kv, first.kv_full, first.q, first.q_full))
    monkeypatch.setattr(blocks, "_CACHE_BYTES", first.nbytes() + 1)
    launch.block_mask_for(kern, 1, 1, 512, 512, {}, torch.device("cpu"))  # over the budget: the first goes
    assert len(blocks._CACHE) == 1
    monkeypatch.setattr(blocks, "_CACHE_BYTES", 1)
    launch.block_mask_for(kern, 1, 1, 256, 256, {}, torch.device("cpu"))
    assert len(blocks._CACHE) == 1  # the newest stays

JIT_HASHES = """
import json, torch, attnforge
from attnforge.runtime import cache
from attnforge.runtime.launch import kernels_for
from attnforge.codegen import Spec
v = attnforge.compile("attention c() { mask = q_idx >= kv_idx }")
def load():
    cache.clear_memory()
    kern = kernels_for(v.lowered, v.program, Spec("bfloat16", 64, 64, 1), torch.device("meta"))
    return kern, kern.modules["fwd"]
kern, mod = load()
real = mod.attn_fwd.cache_key  # Triton walks the syntax trees
cache.keep_jit_hashes(f"{kern.key}_fwd", mod)
_, mod2 = load()  # a new process importing the module from disk
restored = mod2.attn_fwd.hash
path = cache._hashes_path(f"{kern.key}_fwd")
path.write_text("not json")
_, mod3 = load()
print(json.dumps({"real": real, "restored": restored, "new_object": mod2 is not mod,
                  "unreadable": mod3.attn_fwd.hash, "recomputed": mod3.attn_fwd.cache_key}))
"""


def test_jit_hashes_of_a_generated_module_are_kept_on_disk(tmp_path):
    """Triton's hash of a generated kernel (its source and callees, found by walking their syntax
    trees) is kept next to the module after a launch and set when a new process imports it: the
    same value Triton computes; an unreadable file leaves Triton to compute it."""
    import json

    env = {**os.environ, "TRITON_INTERPRET": "0", "ATTNFORGE_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", JIT_HASHES], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["new_object"] and len(got["real"]) == 64
    assert got["restored"] == got["real"] == got["recomputed"] and got["unreadable"] is None


@pytest.mark.parametrize("names", [["causal", "alibi", "softcap", "rel_bias"],
                                   ["sliding_window", "prefix_lm", "document", "per_head"]])
def test_kernels_compile_for_sm90(names):
    """Triton's compiler (not the interpreter) builds every kernel for GPUTarget('cuda', 90, 32)."""
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    out = subprocess.run([sys.executable, "-c", AOT.format(root=ROOT), *names], env=env,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    rows = [json.loads(line) for line in out.stdout.splitlines()]
    # fwd, the one-launch backward, dK/dV and dQ with and without TMA; the Gluon forward; preprocess;
    # rel_bias's bwd_diag
    assert len(rows) == 10 * len(names) + ("rel_bias" in names) + 5 + 2
    assert sorted(r["variant"] for r in rows if r["kind"] == "fwd_sm90") == sorted(names + names[:1] * 5)
    for r in rows:
        print(f"sm_90 {r['variant']:15} {r['kind']:15} regs={r['registers']:3} "
              f"spill={r['spill_bytes']}B smem={r['shared_bytes']}B warps={r['num_warps']}")
        assert r["registers"] > 0 and r["spill_bytes"] >= 0 and r["shared_bytes"] <= 232448
        # compiled as the JIT specializes real inputs (unit strides constant, 16-byte alignment):
        # pipelined tiles, and no spills in the forward and dQ kernels (dK/dV keeps two
        # accumulators and spills tens to hundreds of bytes: see benchmarks/RESULTS.md)
        # (rel_bias's dQ tile also holds its table reads: 16 bytes of spills with Triton 3.6, none with 3.9)
        if r["kind"] in ("fwd tma", "bwd_dq tma"):
            assert r["spill_bytes"] <= (16 if r["variant"] == "rel_bias" else 0), r
        if r["d"] == 64 and r["kind"].startswith("bwd"):  # the cap reaches ptxas
            assert r["maxnreg"] == 168 and r["registers"] <= 168, r
        if r["kind"].startswith("fwd"):  # K and V tiles in several pipeline stages, not one buffer each
            assert r["shared_bytes"] > 2 * (2 * 64 * 128 * 2), r
        if r["kind"] == "fwd_sm90":  # K and V tiles in every stage; 1 to 3 consumer groups + the producer's
            assert r["shared_bytes"] > r["num_stages"] * 2 * r["block_n"] * r["d"] * 2, r
            assert r["num_warps"] == 4 * (r["block_m"] // 64 + 1), r
            if r["maxnreg"]:  # registers at launch: several programs per SM, or three consumer groups
                assert r["registers"] <= r["maxnreg"], r
        # bf16 scores go through the SFU's tanh on the GPU (the interpreter runs the exact formula)
        if r["variant"] == "softcap" and r["kind"] != "bwd_preprocess":
            assert "tanh" in r["approx"], r
        if r["variant"] != "softcap":
            assert "tanh" not in r["approx"], r
    # rel_bias reads its distance table through the read-only cache in every kernel but the
    # preprocess, and never as pipelined 4-byte copies: as many of those as causal's kernels (the
    # LSE and delta vectors of the dK/dV tile), kernel by kernel
    by = {(r["variant"], r["d"], r["kind"], r["block_m"], r["block_n"]): r for r in rows}
    for (variant, d, kind, bm, bn), r in by.items():
        if variant == "rel_bias":
            assert (r["nc_loads"] > 0) == (kind != "bwd_preprocess"), r
            # bwd_diag's tiles along a band share their distances: the table read leaves the loop
            assert (r["nc_in_loops"] == 0) == (kind in ("bwd_diag", "bwd_preprocess")), r
            base = by.get(("causal", d, kind, bm, bn))
            if base is not None:
                assert r["narrow_copies"] == base["narrow_copies"], (r, base)
        elif variant == "causal":
            assert r["nc_loads"] == 0, r


@given(st.integers(0, 400), st.integers(1, 60), st.integers(0, 2 ** 16), st.booleans())
@settings(max_examples=40, deadline=None)
def test_segment_sum_matches_float64_scatter(n, size, seed, distinct):
    """The deterministic, sync-free segment sum used for learnable-tensor gradients, with and
    without a plan made ahead (kept per sizes for bias gradients), bit for bit the same; indices
    that repeat or not."""
    from attnforge.runtime.param_grads import segment_sum, segments

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(size, generator=g)[:n] if distinct else torch.randint(0, size, (n,), generator=g)
    val = torch.randn(idx.numel(), generator=g)
    gold = torch.zeros(size, dtype=torch.float64).index_add_(0, idx, val.double())
    got = segment_sum(idx, val, size)
    assert got.dtype == torch.float32 and got.shape == (size,)
    assert torch.allclose(got.double(), gold, atol=1e-5, rtol=1e-6)
    assert torch.equal(got, segment_sum(idx, val, size))
    assert torch.equal(got, segment_sum(idx, val, size, segments(idx, size)))


def test_steady_state_calls_do_no_compiler_work():
    """Once a variant ran at a size, later forward+backward calls (a learnable bias read through a
    data-dependent mask included) touch neither the IR, the passes nor code generation: what each
    call needs of them is worked out once per kernel set."""
    import cProfile
    import pstats

    bias = torch.randn(2, 31) * 0.1
    ids = torch.arange(40) // 13

    def score(s, b, h, q_idx, kv_idx):
        return s + bias[h, q_idx - kv_idx + 15]

    def mask(b, h, q_idx, kv_idx):
        return (ids[q_idx] == ids[kv_idx]) & (q_idx - kv_idx < 16) & (kv_idx <= q_idx)

    v = attnforge.compile(score_mod=score, mask_mod=mask)
    q, k, vv = _qkv(40, grad=True)
    learnable = bias.clone().requires_grad_()

    def step():
        v(q, k, vv, bias=learnable).sum().backward()

    step()
    prof = cProfile.Profile()
    prof.runcall(step)
    called = {(f, name) for f, _, name in pstats.Stats(prof).stats}
    # IR traversal, analysis passes, code generation, parsing (tile-config tables are plain data)
    compiler = sorted((f, name) for f, name in called
                      if any(f"attnforge{os.sep}{d}{os.sep}" in f for d in ("passes", "dsl"))
                      or (f"attnforge{os.sep}ir{os.sep}" in f and name in ("walk", "children", "as_flex"))
                      or (f.endswith(f"codegen{os.sep}__init__.py") and name not in ("block_d", "block_dv")))
    assert not compiler, compiler


def test_autotuner_keeps_the_fastest_fitting_candidate_and_reuses_it(tmp_path, monkeypatch):
    """Every candidate of the kind's head-dim bucket is timed on the call's own arguments, those that
    do not fit the GPU are skipped, the fastest is saved on disk and served later without timing."""
    import json
    from types import SimpleNamespace

    import triton

    from attnforge.codegen.configs import TileConfig, candidates
    from attnforge.runtime import autotune

    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(autotune, "_TABLE", None)
    monkeypatch.setattr(autotune, "_FORCED", True)
    monkeypatch.setattr(autotune, "interpreting", lambda: False)  # timing needs a GPU: launches are faked
    kern = SimpleNamespace(key="variant-key", spec=SimpleNamespace(block_d=128))
    cands = candidates("bwd", 128)
    too_big, fastest = cands[1], cands[2]
    times = {c: 1.0 + i for i, c in enumerate(cands)}
    times[fastest] = 0.5
    times[too_big] = 0.1  # would win, but does not fit
    launched = []

    def fake_launch(kernels, cfg, fallback=True):
        assert not fallback  # the tuner times configs as they are
        if cfg == too_big:
            raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
        launched.append(cfg)

    monkeypatch.setattr(triton.testing, "do_bench", lambda fn, **kw: (fn(), times[launched[-1]])[1])
    got = autotune.config_for(kern, "bwd", 2000, lambda cfg: cfg, fake_launch)
    assert got == fastest
    key = autotune.tuning_key(kern.key, "bwd", 2000)
    assert set(autotune.TIMINGS[key]) == {c.label for c in cands if c != too_big}
    saved = json.loads((tmp_path / "autotune.json").read_text())[key]
    assert TileConfig(*saved) == fastest
    assert TileConfig(*saved[:6]).maxnreg == 0  # (an entry written before the field was added)
    # a later process: read from disk, nothing timed; lengths of the same power-of-two bucket share it
    monkeypatch.setattr(autotune, "_TABLE", None)
    launched.clear()
    assert autotune.config_for(kern, "bwd", 1500, lambda cfg: cfg, fake_launch) == fastest and not launched


def test_backward_runs_the_tuned_one_launch_config(tmp_path, monkeypatch):
    """A tuned choice for the one-launch backward is what the backward launches (here a 32-row
    tile, not the default 64), and its gradients stay right."""
    from attnforge.runtime import autotune, launch, ops
    from test_kernels import check_variant

    monkeypatch.setenv("ATTNFORGE_CACHE_DIR", str(tmp_path))
    variant = attnforge.compile("attention t() { mask = q_idx >= kv_idx }")
    q, k, v = _qkv(130)
    kern = ops._kernels(variant._key, q, k, v)
    monkeypatch.setattr(autotune, "_TABLE", {autotune.tuning_key(kern.key, "bwd", 130): [32, 64, 4, 3, True, False]})
    monkeypatch.setattr(autotune, "interpreting", lambda: False)  # choices are looked up (tuning stays off)
    calls = []
    real = launch.launch
    monkeypatch.setattr(launch, "launch", lambda k_, call, *a, **kw: (calls.append(call), real(k_, call, *a, **kw)))
    check_variant(variant, 1, 2, 2, 130, 130, 16, 16, torch.float32)
    (bwd,) = [c for c in calls if c.kind == "bwd"]
    assert (bwd.constexprs["BLOCK_M"], bwd.constexprs["BLOCK_N"]) == (32, 64)
    assert [c.kind for c in calls if c.kind.startswith("bwd")] == ["bwd_preprocess", "bwd"]


def test_tile_labels_name_their_configs(monkeypatch):
    """Every tile config reads back from its label (the autotuner's timings and benchmarks/sweep.py
    --candidate use labels); the sweep's candidate override replaces a kind's candidates in every
    head-dim bucket and, with --defaults-only, leaves the other kinds their defaults alone."""
    import importlib.util

    from attnforge.codegen import configs
    from attnforge.codegen.configs import TileConfig

    tiles = {c for _, default, cands in (b for bs in configs.CONFIGS.values() for b in bs) for c in (default, *cands)}
    tiles |= {configs.BWD_64_CAPPED_SHORT, configs.BWD_64_SHORT, configs.SM90_FWD_64_N64, configs.SM90_FWD_M64}
    assert len(tiles) > 30
    for cfg in tiles:
        assert TileConfig.from_label(cfg.label) == cfg, cfg
    for bad in ("64x64 w4", "64x64 w4 s3 tma", "64 x 64 w4 s3", "64x64 w4 s3 r"):
        with pytest.raises(ValueError, match="tile label"):
            TileConfig.from_label(bad)

    spec = importlib.util.spec_from_file_location("sweep", os.path.join(ROOT, "benchmarks", "sweep.py"))
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    monkeypatch.setattr(configs, "CONFIGS", {k: list(v) for k, v in configs.CONFIGS.items()})
    capped = TileConfig.from_label("64x64 w4 s3 r168")
    sweep.set_candidates({"bwd": [capped]}, defaults_only=True)
    assert configs.candidates("bwd", 64) == [configs.tile_config("bwd", 64), capped]
    assert configs.candidates("bwd", 128) == [configs.tile_config("bwd", 128), capped]
    assert configs.candidates("fwd", 64) == [configs.tile_config("fwd", 64)]


def test_the_register_cap_is_for_16_bit_inputs(monkeypatch):
    """The head-dim-64 backward (and the bias gradient's bwd_diag) runs on 168 registers for 16-bit
    inputs; float32 tiles keep uncapped tiles (they would spill kilobytes)."""
    from attnforge.runtime import launch, ops

    monkeypatch.setattr(ops, "_KERNELS", {})
    ran = []
    monkeypatch.setattr(launch, "launch", lambda kern, call, fallback=True: call.kind == "bwd" and ran.append(
        (kern.spec.dtype, call.options.get("maxnreg", 0))))
    v = attnforge.compile(CAUSAL)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q, k, vv = (torch.randn(1, 2, 300, 64, dtype=dtype, requires_grad=True) for _ in range(3))
        v(q, k, vv).sum().backward()
    assert ran == [("float32", 0), ("bfloat16", 168), ("float16", 168)]
    from attnforge.codegen.configs import BWD_DIAG_64_WIDE, diag_config, tile_config

    assert diag_config(64, "float32") == BWD_DIAG_64_WIDE and not BWD_DIAG_64_WIDE.maxnreg
    assert diag_config(64, "bfloat16") == tile_config("bwd_diag", 64) and tile_config("bwd_diag", 64).maxnreg == 168
    assert diag_config(128, "float32") == tile_config("bwd_diag", 128)


def test_inline_asm_inside_loops_is_counted_by_nesting():
    """The AOT report's `nc_in_loops`: inline-assembly ops lexically inside an scf.for body (nested
    loops too), not those before or after a loop."""
    from attnforge.runtime.aot import _asm_in_loops

    ttgir = "\n".join([
        "%0 = tt.elementwise_inline_asm ...",          # before: hoisted
        "%1 = scf.for %i = ... {",
        "  %2 = tt.elementwise_inline_asm ...",        # inside
        "  %3 = scf.for %j = ... {",
        "    %4 = tt.elementwise_inline_asm ...",      # nested
        "  }",
        "  %5 = arith.addf ... {fastmath}",            # braces closed on one line
        "  %6 = tt.elementwise_inline_asm ...",        # inside the outer loop still
        "}",
        "%7 = tt.elementwise_inline_asm ...",          # after
    ])
    assert _asm_in_loops(ttgir) == 3
    assert _asm_in_loops("%0 = tt.elementwise_inline_asm ...") == 0


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
@settings(max_examples=40, deadline=None)
def test_band_lists_walk_each_diagonal_band(n_q, n_k, seed):
    """band_lists against a loop: band u lists, in query order, each query tile i whose key tile
    i - u + n_k - 1 lies in the grid and is not empty, with its kind; the heaviest bands first."""
    from attnforge.runtime.blocks import band_lists

    g = torch.Generator().manual_seed(seed)
    cls = torch.randint(0, 3, (2, 1, n_q, n_k), generator=g)
    lists = band_lists(cls)
    bands = n_q + n_k - 1
    assert lists.num.shape == (2, 1, bands) and sorted(lists.order.tolist()) == list(range(bands))
    for b in range(2):
        for u in range(bands):
            expected = [(i, int(cls[b, 0, i, i - u + n_k - 1])) for i in range(n_q)
                        if 0 <= i - u + n_k - 1 < n_k and cls[b, 0, i, i - u + n_k - 1] != 0]
            n = int(lists.num[b, 0, u])
            assert list(zip(lists.ind[b, 0, u, :n].tolist(), lists.kind[b, 0, u, :n].tolist())) == expected
    totals = lists.num.sum((0, 1))[lists.order]
    assert all(totals[:-1] >= totals[1:])
