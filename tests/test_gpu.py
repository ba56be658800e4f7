"""On a CUDA GPU (compiled Triton, not the interpreter): every example at a realistic shape, in
bfloat16, forward and backward, against the float64 reference; determinism; no recompiles."""
from __future__ import annotations

import pytest
import torch

import attnforge
from attnforge.passes.toeplitz import distance_tables
from attnforge.runtime.cache import interpreting
from conftest import EXAMPLES
from test_kernels import check_variant

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or interpreting(),
                                reason="needs a CUDA GPU and Triton in compiler mode")
B, H, L, D = 2, 8, 4096, 128


def _tensors(name: str, L: int = L) -> tuple[dict, dict]:
    """Constants and captured tensors sizing each example for L tokens and H heads."""
    g = torch.Generator().manual_seed(0)
    if name == "document":
        cuts = torch.sort(torch.randperm(L - 1, generator=g)[:7] + 1).values
        lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([L])]))
        doc = torch.repeat_interleave(torch.arange(8, dtype=torch.int32), lengths)
        return {}, {"document_id": doc.cuda()}
    if name == "rel_bias":
        return {"MAX_LEN": L}, {"rel_bias": (torch.randn(H, 2 * L - 1, generator=g) * 0.5).cuda()}
    if name == "alibi":
        return {"NUM_HEADS": H}, {}
    if name == "sliding_window":
        return {"WINDOW": 1024}, {}
    if name == "prefix_lm":
        return {"PREFIX": 1024}, {}
    if name == "per_head":
        return {"CAUSAL_HEADS": 4, "WINDOW": 512}, {}
    return {}, {}


@pytest.mark.parametrize("name", ["causal", "sliding_window", "prefix_lm", "document", "alibi",
                                  "softcap", "rel_bias", "per_head"])
def test_examples_at_realistic_shape(name):
    consts, tensors = _tensors(name)
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"), **consts)
    check_variant(variant, B, H, H, L, L, D, D, torch.bfloat16, tensors=tensors, device="cuda")


@pytest.mark.parametrize("shape", [(1, 8, 2, 1000, 1000, 128, 128), (2, 4, 4, 777, 2000, 72, 72),
                                   (1, 4, 4, 1500, 1500, 256, 256), (1, 4, 1, 1024, 1024, 64, 96)],
                         ids=["gqa4-L1000", "Lq777-Lk2000-D72", "D256", "gqa4-D64-Dv96"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_odd_shapes_on_gpu(shape, dtype):
    src = """attention banded() {
      score = 20.0 * tanh(score / 20.0) - 0.001 * abs(q_idx - kv_idx)
      mask = (kv_idx <= q_idx + 300) & (kv_idx + 700 > q_idx)
    }"""
    check_variant(attnforge.compile(src), *shape, dtype, device="cuda")


def test_learnable_bias_gradient_is_deterministic_on_gpu():
    consts, tensors = _tensors("rel_bias")
    variant = attnforge.compile(str(EXAMPLES / "rel_bias.attn"), **consts)
    q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    grads = []
    for _ in range(2):
        bias = tensors["rel_bias"].clone().requires_grad_()
        variant(q, k, v, rel_bias=bias).float().square().sum().backward()
        grads.append(bias.grad)
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("name", ["causal", "rel_bias"])
def test_no_recompile_across_lengths_on_gpu(name):
    """One binary per kernel for three lengths (rel_bias: its distance table's views and the band
    lists of its gradient kernel included)."""
    consts, tensors = _tensors(name)
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"), **consts)
    fns = []
    for L_ in (1000, 2048, 3001):
        q, k, v = (torch.randn(1, 4, L_, 64, device="cuda", dtype=torch.bfloat16,
                               requires_grad=True) for _ in range(3))
        learn = {n: t[:4].clone().requires_grad_() for n, t in tensors.items()}
        variant(q, k, v, **learn).sum().backward()
    from attnforge.runtime import ops

    kern = ops._kernels(variant._key, q, k, v)
    for kind, mod in kern.modules.items():
        for fname, fn in vars(mod).items():  # every launched kernel: one binary for all three lengths
            if fname.startswith("attn_") and getattr(fn, "device_caches", None):
                fns.append((fname, sum(len(c[0]) for c in fn.device_caches.values())))
    expected = {"attn_fwd", "attn_bwd_preprocess", "attn_bwd"}  # dK/dV and dQ: one launch
    assert {f for f, _ in fns} == expected | ({"attn_bwd_diag_0"} if name == "rel_bias" else set())
    assert all(n == 1 for _, n in fns), fns


@pytest.mark.parametrize("name", ["causal", "document", "rel_bias"])
def test_direct_launches_match_triton_dispatch(name, monkeypatch):
    """Launches after a kernel's first (`runtime/direct.py`) give the bits Triton's own dispatch
    gives, for inputs whose alignment or length changes between calls (misaligned ones take the
    pointer kernels: another signature, launched through Triton first), and are taken."""
    from attnforge.runtime import direct

    consts, tensors = _tensors(name, 1000)
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"), **consts)
    taken = []
    launch = direct.launch
    monkeypatch.setattr(direct, "launch", lambda *a: taken.append(launch(*a)) or taken[-1])

    def inputs(L_, offset):  # q, k, v of [1, 4, L_, 64], `offset` elements into their storage
        n = 4 * L_ * 64
        return [torch.randn(n + offset, device="cuda", dtype=torch.bfloat16)[offset:].view(1, 4, L_, 64)
                for _ in range(3)]

    def step(q, k, v):
        L_ = q.shape[2]
        q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
        # document ids for this length; the bias's first four heads (MAX_LEN 1000 covers 777)
        learn = _tensors(name, L_)[1] if name == "document" else \
            {n: t[:4].clone().requires_grad_() for n, t in tensors.items()}
        out = variant(q, k, v, **learn)
        out.float().square().sum().backward()
        return [out, q.grad, k.grad, v.grad, *(t.grad for t in learn.values() if t.grad is not None)]

    for L_, offset in ((1000, 0), (1000, 1), (777, 0), (1000, 0)):
        qkv = inputs(L_, offset)
        monkeypatch.setattr(direct, "ENABLED", False)
        want = step(*qkv)
        monkeypatch.setattr(direct, "ENABLED", True)
        for _ in range(3):
            got = step(*qkv)
            assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert any(taken) and not all(taken)


@pytest.mark.parametrize("name", ["causal", "document", "softcap", "rel_bias"])
def test_forward_and_backward_never_wait_on_the_gpu(name):
    """Once kernels and block metadata exist, a training step's forward and backward (learnable
    tensors' gradients included) queue GPU work without one host sync: no .item(), no copy from
    host memory, no data-dependent shapes."""
    consts, tensors = _tensors(name, 1024)
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"), **consts)
    tensors = {n: t.clone().requires_grad_(t.is_floating_point()) for n, t in tensors.items()}
    q, k, v = (torch.randn(1, H, 1024, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))

    def step():
        variant(q, k, v, **tensors).float().square().sum().backward()

    step()  # compiles and builds the block metadata
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_block_metadata_for_a_new_length_waits_on_nothing():
    """A new length builds block metadata without a host sync: on the host and uploaded from pinned
    memory for small tensor-free grids, on the GPU otherwise; both give the same tiles and order."""
    from attnforge.runtime.blocks import build_block_mask

    variant = attnforge.compile(str(EXAMPLES / "causal.attn"))

    def qkv(L_):
        return [torch.randn(1, 2, L_, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                for _ in range(3)]

    variant(*qkv(1024)).sum().backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        variant(*qkv(1000)).sum().backward()
        masks = [build_block_mask(variant.lowered, 1, 1, 3000, 2900, {}, 128, 128, "cuda", on_host=h)
                 for h in (True, False)]
        orders = [(m.order("q", 64), m.order("kv", 32)) for m in masks]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert masks[0].host is not None and masks[1].host is None
    assert masks[0].kv.ind.is_cuda and torch.equal(masks[0].to_dense(), masks[1].to_dense())
    for a, b in zip(*orders):
        assert a.is_cuda and torch.equal(a, b)


def test_first_forward_compiles_the_backward_ahead():
    """The first forward that needs gradients compiles the backward's kernels on threads,
    specialized as the backward launches them: the backward itself compiles nothing."""
    from attnforge.runtime import ops

    variant = attnforge.compile("attention ahead() { mask = q_idx + 11 >= kv_idx }")
    q, k, v = (torch.randn(2, 4, 700, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    out = variant(q, k, v)
    kern = ops._kernels(variant._key, q, k, v)
    assert kern.ahead is not None and len(kern.ahead) == 2, kern.ahead  # preprocess, dK/dV and dQ in one
    for done in kern.ahead:
        done.result()  # raises what a compile raised

    def binaries():
        return {kind: sum(len(c[0]) for c in getattr(mod, name).device_caches.values())
                for kind, mod in kern.modules.items() for name in dir(mod)
                if kind.startswith("bwd") and name.startswith("attn_")}

    before = binaries()
    assert set(before) == {"bwd_preprocess", "bwd"} and all(before.values()), before
    out.float().square().sum().backward()
    torch.cuda.synchronize()
    assert binaries() == before and not kern.ahead, (binaries(), before)
    with torch.no_grad():  # a forward without gradients starts nothing
        other = attnforge.compile("attention ahead2() { mask = q_idx + 13 >= kv_idx }")
        other(q, k, v)
        assert ops._kernels(other._key, q, k, v).ahead is None


@pytest.mark.parametrize("name, D, tile", [("causal", 128, "long"), ("softcap", 128, "long"), ("document", 128, "long"),
                                           ("far", 128, "long"), ("causal", 64, "long"), ("document", 64, "long"),
                                           ("far", 48, "long"), ("causal", 128, "short"), ("document", 128, "short"),
                                           ("far", 128, "short"), ("softcap", 128, "short"), ("causal", 64, "short"),
                                           ("document", 64, "short"), ("far", 48, "short"), ("document", 128, "n64"),
                                           ("far", 128, "n64"), ("causal", 64, "m192"), ("document", 64, "m192"),
                                           ("far", 48, "m192"), ("softcap", 64, "m192"), ("alibi", 64, "long"),
                                           ("alibi", 128, "long"), ("alibi", 64, "m192")])
def test_sm90_forward_runs_and_matches_the_reference(name, D, tile, monkeypatch):
    """On Hopper, bf16 at head dims 64 and 128 (48 padded to 64) runs the Gluon forward (fwd_sm90),
    with its tile for long programs, its tiles for short ones (several programs per SM; one consumer
    group at head dim 128), 64-key tiles with one program per SM and three consumer groups (192 query
    rows, block metadata in tiles of their own) at head dim 64; an odd length, GQA and the LSE
    against the float64 reference with flex's rule. `far` leaves the first 501 rows (whole query
    tiles among them, whose programs have no key tile to walk) with nothing to attend to: output 0,
    LSE -inf."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("needs an sm_90 GPU")
    from attnforge.codegen import configs
    from attnforge.runtime import launch

    tiles = {"long": (configs.SM90_FWD_64, configs.SM90_FWD), "short": (configs.SM90_FWD_64_N64, configs.SM90_FWD_M64),
             "n64": (None, configs.SM90_FWD_N64), "m192": (configs.SM90_FWD_64_M192, None)}
    cfg = tiles[tile][D > 64]
    monkeypatch.setattr(launch, "sm90_config", lambda d, rows=None, plain=False, reads=True: cfg)

    v = attnforge.compile("attention far() { mask = q_idx - kv_idx > 500 }" if name == "far"
                          else str(EXAMPLES / f"{name}.attn"))
    torch.manual_seed(0)
    L = 1100
    q = torch.randn(2, 4, L, D, device="cuda", dtype=torch.bfloat16)
    k, vv = (torch.randn(2, 2, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    tensors = {"document_id": torch.arange(L, device="cuda", dtype=torch.int32) // 300} if name == "document" else {}
    ran, real_launch = [], launch.launch
    monkeypatch.setattr(launch, "launch", lambda kern, call, **kw: (
        ran.append((call.kind, call.constexprs["BLOCK_M"], call.constexprs["BLOCK_N"], call.options.get("maxnreg", 0))),
        real_launch(kern, call, **kw)))
    out, lse = v(q, k, vv, return_lse=True, enable_gqa=True, **tensors)
    assert ran == [("fwd_sm90", cfg.block_m, cfg.block_n, cfg.maxnreg)]
    gold, glse = v.reference(q.double(), k.double(), vv.double(), return_lse=True, enable_gqa=True, **tensors)
    low = v.reference(q, k, vv, enable_gqa=True, **tensors)
    assert (out.double() - gold).abs().max() <= 2 * (low.double() - gold).abs().max() + 1e-3
    assert torch.equal(lse == float("-inf"), glse == float("-inf"))
    fin = torch.isfinite(glse)
    assert torch.allclose(lse.double()[fin], glse[fin], atol=1e-3, rtol=0)
    if name == "far":
        assert (lse[:, :, :501] == float("-inf")).all() and (out[:, :, :501] == 0).all()


@pytest.mark.parametrize("name,Lq,group", [("causal", 2500, 1), ("causal", 4096, 4), ("document", 4096, 1),
                                           ("alibi", 4096, 1), ("rel_bias", 2000, 1), ("softcap", 4096, 1)])
def test_head_dim_64_backward_tiles_match_the_reference(name, Lq, group, monkeypatch):
    """At head dim 64 the one-launch backward runs on 168 registers (three programs per SM) where the
    scores' derivative is one and the score_mod reads no tensor (plain, ALiBi), with three stages for
    plain scores without GQA, two otherwise, pointer loads for short programs (documents); softcap and
    the learnable bias keep the uncapped tile (the bias at this length its short-program form).
    Gradients (and the bias's) against the float64 reference with flex's rule; an odd length, GQA."""
    from attnforge.codegen import configs
    from attnforge.runtime import launch, ops

    monkeypatch.setattr(ops, "_KERNELS", {})  # (a variant's tile follows its first length: this test's)
    consts, tensors = _tensors(name, Lq)
    if name == "alibi":
        consts = {"NUM_HEADS": 4 * group}
    if name == "rel_bias":
        tensors = {"rel_bias": tensors["rel_bias"][: 4 * group].contiguous()}
    variant = attnforge.compile(str(EXAMPLES / f"{name}.attn"), **consts)
    ran, real_launch = [], launch.launch
    monkeypatch.setattr(launch, "launch", lambda kern, call, **kw: (
        call.kind == "bwd" and ran.append((call.options.get("maxnreg", 0), call.options["num_stages"],
                                           call.constexprs["USE_TMA"])),
        real_launch(kern, call, **kw)))
    check_variant(variant, 1, 4 * group, 4, Lq, Lq, 64, 64, torch.bfloat16, tensors=tensors, device="cuda")
    expected = {("causal", 1): configs.BWD_64_CAPPED, ("causal", 4): configs.BWD_64_CAPPED_S2,
                ("document", 1): configs.BWD_64_CAPPED_SHORT, ("alibi", 1): configs.BWD_64_CAPPED_S2,
                ("rel_bias", 1): configs.BWD_64_SHORT, ("softcap", 1): configs.tile_config("bwd", 64)}[name, group]
    assert ran and set(ran) == {(expected.maxnreg, expected.num_stages, expected.tma)}


@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int64, torch.uint8])
@pytest.mark.parametrize("D", [64, 128])
def test_distance_tables_of_every_entry_width(int_dtype, D):
    """Distance tables (score, mask and the bias gradient's) of 32- and 64-bit entries are read through
    the read-only cache (`_ld_nc`), narrower ones by tl.load: every width against the reference,
    rows the mask empties included."""
    Lq = Lk = 1000
    g = torch.Generator().manual_seed(1)
    bias = (torch.randn(4, 2 * Lk - 1, generator=g) * 0.5).cuda()
    tilt = torch.randint(0, 4, (2 * Lk - 1,), generator=g).to(int_dtype).cuda()
    allowed = (torch.rand(2 * Lk - 1, generator=g) > 0.2).to(int_dtype).cuda()

    def score_mod(s, b, h, q, k):
        return s + bias[h, q - k + (Lk - 1)] + 0.05 * tilt[q - k + (Lk - 1)]

    def mask_mod(b, h, q, k):
        return (allowed[q - k + (Lk - 1)] != 0) & (q >= k)

    variant = attnforge.compile(score_mod=score_mod, mask_mod=mask_mod)
    assert len(distance_tables(variant.lowered)) == 3  # bias, tilt and allowed: all read from tables
    check_variant(variant, 1, 4, 4, Lq, Lk, D, D, torch.bfloat16, device="cuda")


@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int64, torch.uint8])
def test_reads_per_score_of_every_entry_width(int_dtype):
    """Tensors indexed by both q_idx and kv_idx (a float32 bias, an integer tilt) are read per score
    through the read-only cache where their entries are 32 or 64 bits (`_ld_nc_masked`), by a masked
    tl.load otherwise: against the reference at odd lengths (tiles past the ends masked), GQA."""
    Lq, Lk = 777, 1000
    g = torch.Generator().manual_seed(2)
    bias = (torch.randn(4, Lq, Lk, generator=g) * 0.5).cuda()
    tilt = torch.randint(0, 4, (2, Lq, Lk), generator=g).to(int_dtype).cuda()

    def score_mod(s, b, h, q, k):
        return s + bias[h, q, k] + 0.1 * tilt[h // 2, q, k]

    variant = attnforge.compile(score_mod=score_mod, mask_mod=lambda b, h, q, k: q + 300 >= k)
    check_variant(variant, 1, 4, 2, Lq, Lk, 64, 64, torch.bfloat16, device="cuda")
