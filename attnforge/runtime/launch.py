"""Launching the generated kernels: forward, and backward for q, k, v (captured-tensor gradients are
in `param_grads.py`). CPU tensors run under Triton's interpreter."""
from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import torch
import triton
import triton.language as tl

from .. import codegen
from ..codegen import SPARSE_BLOCK, Spec, TileConfig, tile_config
from ..codegen.configs import (FINE_MAX_TILES, FINE_SPARSE_BLOCK, SM90_PRODUCER_REGS, SM90_WG_ROWS, bwd_config,
                               sm90_config, sm90_consumer_regs, sm90_pingpong)
from ..ir.program import Program
from ..passes.toeplitz import reads_batch, toeplitz_loads
from . import autotune, direct, warmup
from .blocks import BandLists, BlockMask, TileLists, bh_strides, cached_block_mask, rule_params
from .cache import cache_key, device_tag, interpreting, keep_jit_hashes, load_module, on_disk
from .tables import table_args, tables_of

DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32"}
# dK/dV and dQ in one launch (kind `bwd`, its own tile configs); ATTNFORGE_FUSED_BWD=0: two launches
# (`bwd_dkdv`, `bwd_dq`), each with its own
FUSED_BWD = os.environ.get("ATTNFORGE_FUSED_BWD", "1") != "0"


@dataclass
class Kernels:
    """The generated modules of one variant specialization, and what launches need to know of it
    and its device, worked out once."""

    prog: Program
    source: Program
    spec: Spec
    key: str
    modules: dict[str, object]
    tma: bool                 # the device can load tiles through tensor descriptors
    diag_loads: list[int]     # learnable reads indexed by q_idx - kv_idx (bwd_diag kernels)
    diag_by_batch: frozenset  # those of them whose index also reads b
    params: list[str]         # captured tensors the kernels read, in argument order
    rule_params: list[str]    # captured tensors the block rules read
    sm90: bool = False        # the Gluon forward runs here (Hopper, and a variant it covers)
    ahead: list | None = None  # compiles of the backward's kernels started by the first forward
    row_tiles: float | None = None  # the first block metadata's key tiles per query tile (`_row_tiles`)
    plain: bool = False       # scores without a score_mod (codegen.plain_scores)
    linear: bool = False      # d score_mod / d score = 1 (codegen.linear_scores)
    score_reads: bool = False  # the score_mod reads captured tensors (codegen.score_reads)
    tables: list = field(default_factory=list)  # reads taken from distance tables (`tables.py`)
    table_index: dict = field(default_factory=dict)  # their gather indices, per sizes
    diag_index: dict = field(default_factory=dict)  # bias gradients' scatter plans (param_grads.Segments), per sizes
    direct: dict = field(default_factory=dict)  # compiled kernels by launch signature (`direct.py`)


class _Modules(dict):
    """kind -> generated module, each imported on its first launch (a process that only runs
    forwards never imports a backward's source; a new process's first call imports one module)."""

    def __init__(self, load, generated: dict):
        super().__init__()
        self._load = load
        self.generated = generated  # sources this process generated (none: all came from the disk cache)

    def __missing__(self, kind: str):
        if kind not in codegen.KINDS:
            raise KeyError(kind)
        self[kind] = mod = self._load(kind)
        return mod


def kernels_for(prog: Program, source: Program, spec: Spec, device: torch.device) -> Kernels:
    warmup.wait()
    tag = device_tag(device)
    base = cache_key(codegen.ir_hash(prog), repr(spec), codegen.template_hash(), tag)
    generated: dict[str, str] = {}

    def build(kind):
        def make():
            if not generated:
                generated.update(codegen.generate(prog, source, spec, on_gpu=tag != "interpret"))
            return generated[kind]
        return make

    modules = _Modules(lambda kind: load_module(f"{base}_{kind}", build(kind), tag == "interpret"), generated)
    tma = tag == "interpret" or (device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9)
    diag = toeplitz_loads(prog)
    loads = prog.grads[0].d_loads
    return Kernels(prog, source, spec, base, modules, tma, diag,
                   frozenset(i for i in diag if reads_batch(loads[i][0])), codegen.captured_params(prog),
                   rule_params(prog), _hopper(device) and codegen.sm90_forward(prog, spec),
                   tables=tables_of(prog), plain=codegen.plain_scores(prog),
                   linear=codegen.linear_scores(prog), score_reads=codegen.score_reads(prog))


def _hopper(device: torch.device) -> bool:
    """An sm_90 GPU, and a Triton with Gluon's Hopper ops (3.6 and later)."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device)[0] != 9:
        return False
    try:
        import triton.experimental.gluon.language.nvidia.hopper  # noqa: F401
    except ImportError:
        return False
    return True


def list_args(lists: TileLists | BandLists) -> list:
    """Batch and head strides of a set of tile lists' counts and indices, and the lists' length."""
    return [*bh_strides(lists.num), *bh_strides(lists.ind), lists.ind.shape[-1]]


def _walk(bm: BlockMask, rows: str, block: int) -> list:
    """What programs over `rows` tiles ("q": query tiles, walking key tiles; "kv": the reverse) read
    of the block metadata: partial and full tile lists, the tiles' heaviest-first order, strides."""
    lists, full = (bm.kv, bm.kv_full) if rows == "q" else (bm.q, bm.q_full)
    return [lists.num, lists.ind, full.num, full.ind, bm.order(rows, block), *list_args(lists)]


def param_args(k: Kernels, tensors: dict) -> list:
    """Arguments of the captured tensors (pointer, then stride and size per dimension), then of the
    distance tables (`tables.add_tables` put them in `tensors`)."""
    args = []
    for name in k.params:
        t = tensors[name]
        args.append(t)
        for stride, size in zip(t.stride(), t.shape):
            args.extend((stride, size))
    return args + table_args(k, tensors)


def precision(dtype: torch.dtype) -> dict:
    """tl.dot settings: exact fp32 products for fp32 inputs; bf16 operands are widened under the
    interpreter, whose bf16 dot is wrong (Triton 3.9)."""
    dot = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[dtype]
    if dtype == torch.bfloat16 and interpreting():
        dot = tl.float32
    return {"PRECISION": "ieee" if dtype == torch.float32 else "tf32", "DOT": dot}


def _tma_ok(k: Kernels, *tensors: torch.Tensor) -> bool:
    """Tiles of these tensors can be copied by TMA (tensor descriptors): a Hopper or newer device
    (or the interpreter, which emulates it), unit last stride, 16-byte aligned base and row strides."""
    if not k.tma:
        return False
    for t in tensors:  # (loops, not generators: this runs on every call)
        *rows, last = t.stride()
        size = t.element_size()
        if last != 1 or t.data_ptr() % 16 or any(st * size % 16 for st in rows):
            return False
    return True


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b  # (triton.cdiv is a constexpr function: ~3 us a host call in Triton 3.6)


def _ensure_allocator() -> None:
    """In-kernel tensor descriptors need scratch memory from an allocator Triton holds per thread
    (autograd runs the backward on its own thread): set one where none is set."""
    try:
        from triton.runtime._allocation import NullAllocator, _allocator
        if not isinstance(_allocator.get(), NullAllocator):
            return
    except ImportError:  # a Triton that keeps it elsewhere: set ours
        pass
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))


def block_mask_for(k: Kernels, B, H, Lq, Lk, tensors, device) -> BlockMask:
    return cached_block_mask(k.key, k.prog, B, H, Lq, Lk, tensors, SPARSE_BLOCK, SPARSE_BLOCK, device,
                             k.rule_params)


@dataclass
class Call:
    """One kernel launch: the module's kernel, its grid, arguments, constexprs and launch options."""

    kind: str
    fn_name: str
    grid_args: tuple
    args: list
    constexprs: dict
    options: dict


def fwd_call(k: Kernels, q, k_, v, out, lse, tensors: dict, scale: float, bm: BlockMask,
             cfg: TileConfig | None = None) -> Call:
    B, H, Lq, D = q.shape
    Lk, DV = k_.shape[2], v.shape[3]
    # the Gluon forward wherever it applies, unless the autotuner chose a Triton config
    # (TMA descriptors need non-empty tensors)
    sm90 = k.sm90 and (cfg is None or cfg.sm90) and _tma_ok(k, q, k_, v, out) and q.numel() * k_.numel() > 0
    if sm90 and cfg is None:
        cfg = sm90_config(k.spec.block_d, _row_tiles(k, bm), k.plain, bool(k.params or k.tables))  # maybe Triton's
        sm90 = cfg.sm90
    if not sm90 and (cfg is None or cfg.sm90):
        cfg = tile_config("fwd", k.spec.block_d)
    bm = tile_block_mask(k, bm, B, H, q.device, tensors, cfg)
    rest = [lse.stride(0), lse.stride(1), Lq, Lk, H, scale, *_walk(bm, "q", cfg.block_m), *param_args(k, tensors)]
    consts = dict(GROUP=k.spec.group, D=D, DV=DV, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                  BLOCK_D=k.spec.block_d, BLOCK_DV=k.spec.block_dv, SPARSE_M=bm.block_m,
                  SPARSE_N=bm.block_n)
    if sm90:
        # Q, K, V and O as TMA descriptors over the whole tensors (built on the host: no program
        # builds its own), which carry their strides
        return Call("fwd_sm90", "attn_fwd", (Lq, B * H, cfg.block_m),
                    [*_sm90_descriptors(q, k_, v, out, cfg, k.spec), lse, *rest],
                    dict(consts, STAGES=cfg.num_stages, CONSUMER_REGS=sm90_consumer_regs(cfg),
                         PRODUCER_REGS=SM90_PRODUCER_REGS, PINGPONG=sm90_pingpong(cfg, k.spec.block_d),
                         SCALE_POS=scale > 0),
                    {"num_warps": cfg.num_warps, **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {})})
    consts.update(USE_TMA=cfg.tma and _tma_ok(k, k_, v), **precision(q.dtype))
    return Call("fwd", "attn_fwd", (Lq, B * H, cfg.block_m),
                [q, k_, v, out, lse, *q.stride(), *k_.stride(), *v.stride(), *out.stride(), *rest], consts,
                launch_options(cfg))


def tile_block_mask(k: Kernels, bm: BlockMask, B: int, H: int, device, tensors: dict,
                    cfg: TileConfig) -> BlockMask:
    """Block metadata for kernels of tiles `cfg`: in tiles of max(FINE_SPARSE_BLOCK, cfg's) a side
    where that is finer than `bm` (the variant's, in SPARSE_BLOCK tiles) and the grid stays within
    FINE_MAX_TILES, or where `bm`'s tiles are not made of the kernel's (the forward's 192 query rows:
    coarser), built once per `bm` (which is rebuilt when a tensor its rules read changes); else `bm`."""
    block_m, block_n = max(FINE_SPARSE_BLOCK, cfg.block_m), max(FINE_SPARSE_BLOCK, cfg.block_n)
    if (block_m, block_n) == (bm.block_m, bm.block_n):
        return bm
    made_of = bm.block_m % block_m == 0 and bm.block_n % block_n == 0
    if made_of and _cdiv(bm.Lq, block_m) * _cdiv(bm.Lk, block_n) > FINE_MAX_TILES:
        return bm
    return bm.in_tiles(k.prog, B, H, tensors, block_m, block_n, device)


def _row_tiles(k: Kernels, bm: BlockMask) -> float | None:
    """How long the forward's programs are (`BlockMask.row_tiles`), taken from the variant's first
    block metadata and kept: one tile per variant, so a new length never compiles another (the count
    waits on the GPU once, on a first call that compiles anyway). None for metadata without values
    (meta tensors: ahead-of-time compiles)."""
    if bm.kv.num.device.type == "meta":
        return None
    if k.row_tiles is None:
        k.row_tiles = bm.row_tiles()
    return k.row_tiles


@cache
def _nvmma_layout(dtype: torch.dtype, rows: int, cols: int):
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, cols], {torch.bfloat16: gl.bfloat16,
                                                                    torch.float16: gl.float16}[dtype])


def _sm90_descriptors(q, k_, v, out, cfg: TileConfig, spec: Spec) -> list:
    """[B, H, L, D] descriptors with [1, 1, rows, padded D] boxes: one consumer group's rows for Q
    and O, a key tile for K and V."""
    wg = SM90_WG_ROWS
    return [_descriptor(t, rows, cols) for t, rows, cols in ((q, wg, spec.block_d), (k_, cfg.block_n, spec.block_d),
                                                             (v, cfg.block_n, spec.block_dv), (out, wg, spec.block_dv))]


_DESCRIPTORS: dict[tuple, object] = {}


def _descriptor(t: torch.Tensor, rows: int, cols: int):
    """A TMA descriptor of `t` with [1, 1, rows, cols] boxes. Triton checks a descriptor's fields
    when it is made (~10 us a descriptor on a fast host, four a forward); one made and checked for
    the same dtype, shape, strides and box is copied with `t` as its base instead (the base's
    alignment was checked by `_tma_ok`)."""
    key = (t.dtype, t.shape, t.stride(), rows, cols)
    made = _DESCRIPTORS.get(key)
    if made is None:
        from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

        made = TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, cols],
                                _nvmma_layout(t.dtype, rows, cols))
        made.base = None  # (kept without its tensor: the cache holds no memory alive)
        setattr(made, direct.SIG_ATTR, key)  # (what a direct launch keys it by: Triton's specialization and more)
        if len(_DESCRIPTORS) > 256:
            _DESCRIPTORS.clear()
        _DESCRIPTORS[key] = made
    copy = object.__new__(type(made))
    copy.__dict__.update(made.__dict__)
    copy.base = t
    return copy


@dataclass
class BwdBuffers:
    """Everything the backward kernels read and write."""

    do: torch.Tensor
    dlse: torch.Tensor | None
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    lse: torch.Tensor
    delta: torch.Tensor
    lse2: torch.Tensor
    dq: torch.Tensor
    dk: torch.Tensor
    dv: torch.Tensor


def preprocess_call(k: Kernels, t: BwdBuffers) -> Call:
    """delta = rowsum(dO * O) - dLSE and lse2 = lse * log2(e)."""
    B, H, Lq, _ = t.q.shape
    pre = tile_config("bwd_preprocess", k.spec.block_dv)
    has_dlse = t.dlse is not None
    return Call("bwd_preprocess", "attn_bwd_preprocess", (Lq, B * H, pre.block_m),
                [t.out, t.do, t.dlse if has_dlse else t.delta, t.lse, t.delta, t.lse2,
                 *t.out.stride(), *t.do.stride(), Lq, H],
                dict(HAS_DLSE=has_dlse, DV=t.v.shape[3], BLOCK_M=pre.block_m,
                     BLOCK_DV=k.spec.block_dv), launch_options(pre))


def dkdv_call(k: Kernels, t: BwdBuffers, tensors: dict, scale: float, bm: BlockMask,
              cfg: TileConfig | None = None) -> Call:
    B, H, Lq, _ = t.q.shape
    HKV, Lk = t.k.shape[1], t.k.shape[2]
    cfg = cfg or tile_config("bwd_dkdv", k.spec.block_d)
    bm = tile_block_mask(k, bm, B, H, t.q.device, tensors, cfg)
    return Call("bwd_dkdv", "attn_bwd_dkdv", (Lk, B * HKV, cfg.block_n),
                [t.q, t.k, t.v, t.do, t.lse2, t.delta, t.dk, t.dv, *_bwd_strides(t), Lq, Lk, H, HKV,
                 scale, *_walk(bm, "kv", cfg.block_n), *param_args(k, tensors)],
                dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **_bwd_consts(k, t, bm, cfg)), launch_options(cfg))


def dq_call(k: Kernels, t: BwdBuffers, tensors: dict, scale: float, bm: BlockMask,
            cfg: TileConfig | None = None) -> Call:
    B, H, Lq, _ = t.q.shape
    Lk = t.k.shape[2]
    cfg = cfg or tile_config("bwd_dq", k.spec.block_d)
    bm = tile_block_mask(k, bm, B, H, t.q.device, tensors, cfg)
    return Call("bwd_dq", "attn_bwd_dq", (Lq, B * H, cfg.block_m),
                [t.q, t.k, t.v, t.do, t.lse2, t.delta, t.dq, *_bwd_strides(t), Lq, Lk, H, scale,
                 *_walk(bm, "q", cfg.block_m), *param_args(k, tensors)],
                dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **_bwd_consts(k, t, bm, cfg)), launch_options(cfg))


def bwd_call(k: Kernels, t: BwdBuffers, tensors: dict, scale: float, bm: BlockMask,
             cfg: TileConfig | None = None) -> Call:
    """dK/dV and dQ in one launch (both with `cfg`): per kv head, its key tiles' programs, then
    its query heads' query tiles'."""
    B, H, Lq, _ = t.q.shape
    HKV, Lk = t.k.shape[1], t.k.shape[2]
    cfg = cfg or bwd_config(k.spec.block_d, _row_tiles(k, bm), k.plain and k.spec.group == 1, k.linear,
                            k.spec.dtype, k.score_reads)
    bm = tile_block_mask(k, bm, B, H, t.q.device, tensors, cfg)
    n_kv, n_q = _cdiv(Lk, cfg.block_n), _cdiv(Lq, cfg.block_m)
    return Call("bwd", "attn_bwd", (n_kv, n_q, B * HKV, k.spec.group),
                [t.q, t.k, t.v, t.do, t.lse2, t.delta, t.dq, t.dk, t.dv, *_bwd_strides(t), Lq, Lk, H, HKV, scale,
                 *_walk(bm, "kv", cfg.block_n), *_walk(bm, "q", cfg.block_m), n_kv, n_q,
                 *param_args(k, tensors)],
                dict(BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, **_bwd_consts(k, t, bm, cfg)), launch_options(cfg))


def _bwd_strides(t: BwdBuffers) -> list:
    return [*t.q.stride(), *t.k.stride(), *t.v.stride(), *t.do.stride()]


def _bwd_consts(k: Kernels, t: BwdBuffers, bm: BlockMask, cfg: TileConfig) -> dict:
    return dict(GROUP=k.spec.group, D=t.q.shape[3], DV=t.v.shape[3], BLOCK_D=k.spec.block_d,
                BLOCK_DV=k.spec.block_dv, SPARSE_M=bm.block_m, SPARSE_N=bm.block_n,
                USE_TMA=cfg.tma and _tma_ok(k, t.q, t.k, t.v, t.do), **precision(t.q.dtype))


# the gradient kernels' kinds, each with a make_call(k, t, tensors, scale, bm, cfg)
GRAD_KINDS = {"bwd": bwd_call, "bwd_dkdv": dkdv_call, "bwd_dq": dq_call}


def grad_kinds() -> tuple[str, ...]:
    """dK/dV and dQ in one launch, or (ATTNFORGE_FUSED_BWD=0) in two."""
    return ("bwd",) if FUSED_BWD else ("bwd_dkdv", "bwd_dq")


def launch_options(cfg: TileConfig) -> dict:
    """Triton's launch options for a tile: warps, stages and a register cap where it has one."""
    return {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages, **({"maxnreg": cfg.maxnreg} if cfg.maxnreg else {})}


_FITTED: dict[tuple, tuple[dict, dict]] = {}
# the tile size a kernel loops over inside a program (changing it leaves the grid alone)
INNER = {"fwd": "BLOCK_N", "bwd_dq": "BLOCK_N", "bwd_dkdv": "BLOCK_M"}


def launch(k: Kernels, call: Call, fallback: bool = True) -> None:
    """Launch; where a config needs more shared memory than the GPU has (extra loads of captured
    tensors, large head dims), retry with fewer pipeline stages, then a smaller inner tile, and
    remember what fit (unless `fallback` is off: the autotuner skips such configs)."""
    mod = k.modules[call.kind]
    grid = mod.grid(*call.grid_args)
    if interpreting():
        getattr(mod, call.fn_name)[grid](*call.args, **call.constexprs)
        return
    if call.constexprs.get("USE_TMA"):  # in-kernel descriptors (fwd_sm90's come from the host)
        _ensure_allocator()
    sig = None
    if fallback and direct.ENABLED:
        device = torch.cuda.current_device()
        sig = direct.signature(call.kind, device, call.args, call.constexprs, call.options)
        if sig is not None and direct.launch(k.direct, sig, device, grid, call.args):
            return
    jit_fn = getattr(mod, call.fn_name)
    fn = jit_fn[grid]
    if not fallback:
        fn(*call.args, **call.constexprs, **call.options)
        keep_jit_hashes(f"{k.key}_{call.kind}", mod)
        return
    # the launch options are part of the key: configs differing only in stages or warps (the
    # autotuner's choice and the default) must not take each other's fitted settings
    key = (k.key, call.kind, tuple(sorted(call.constexprs.items(), key=lambda kv: kv[0])),
           tuple(sorted(call.options.items())))
    first = key not in _FITTED
    consts, opts = _FITTED.get(key, (call.constexprs, call.options))
    while True:
        try:
            kernel = fn(*call.args, **consts, **opts)
            direct.remember(k.direct, sig, kernel, jit_fn, call.args, consts)
            _FITTED[key] = (consts, opts)
            if first:  # (this process's first launch of the config: Triton has hashed the module)
                keep_jit_hashes(f"{k.key}_{call.kind}", mod)
            return
        except triton.runtime.errors.OutOfResources:
            inner = INNER.get(call.kind)
            if opts.get("num_stages", 1) > 1:
                opts = {**opts, "num_stages": opts["num_stages"] - 1}
            elif inner and consts[inner] > 16:
                consts = {**consts, inner: consts[inner] // 2}
                opts = {**opts, "num_stages": call.options["num_stages"]}
            else:
                raise


# what a kernel that does not compile for this GPU raises (PTXASError: ptxas out of registers)
_COMPILE_ERRORS = (triton.compiler.errors.CompilationError, triton.runtime.errors.OutOfResources,
                   *((triton.runtime.errors.PTXASError,) if hasattr(triton.runtime.errors, "PTXASError") else ()))


def forward(k: Kernels, q, k_, v, tensors: dict, scale: float, bm: BlockMask, grad: bool = False):
    """`grad`: a backward will follow (the first such forward starts compiling its kernels)."""
    B, H, Lq, _ = q.shape
    out = torch.empty(B, H, Lq, v.shape[3], dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, Lq, dtype=torch.float32, device=q.device)
    # a new variant (its source generated in this process) compiles its backward alongside the
    # forward; one whose kernels are on disk loads the backward's after launching the forward
    ahead = grad and k.ahead is None and not interpreting()
    if ahead and _is_new(k):
        compile_backward_ahead(k, q, k_, v, out, lse, tensors, scale, bm)
    make = lambda c: fwd_call(k, q, k_, v, out, lse, tensors, scale, bm, c)  # noqa: E731
    cfg = autotune.config_for(k, "fwd", Lq, make, launch)
    while True:  # each fallback below happens once per variant, and ends in the Triton forward
        call = make(cfg)
        try:
            launch(k, call)
            break
        except _COMPILE_ERRORS as err:
            if call.kind != "fwd_sm90":
                raise
            if cfg is None and call.options.get("maxnreg"):
                # the short-program tile runs on fewer registers (several programs per SM), which a
                # heavy score or mask may not fit in: the long-program tile from now on
                k.row_tiles = math.inf
                continue
            # a score or mask the Gluon forward cannot compile: the Triton forward from now on
            warnings.warn(f"attnforge: variant `{k.prog.name}`: the sm_90 forward did not compile "
                          f"({type(err).__name__}); using the Triton forward", RuntimeWarning, stacklevel=2)
            k.sm90 = False
    if ahead and k.ahead is None:
        compile_backward_ahead(k, q, k_, v, out, lse, tensors, scale, bm)
    return out, lse


def _is_new(k: Kernels) -> bool:
    """The variant's sources were generated in this process, or will be (its forward's is not on
    disk); looked up without importing a module."""
    return bool(k.modules.generated) or not on_disk(f"{k.key}_{'fwd_sm90' if k.sm90 else 'fwd'}")


# compiles under way on threads: a fork waits for them (no child inherits a thread's half-done
# import or held lock); the threads end with their compiles, none is kept idle
_PENDING: set = set()


def _wait(compiles) -> None:
    for done in list(compiles):
        done.exception()  # waits; where a compile failed, the launch compiles again and reports it


os.register_at_fork(before=lambda: _wait(_PENDING))


def compile_backward_ahead(k: Kernels, q, k_, v, out, lse, tensors: dict, scale: float, bm: BlockMask):
    """Compile the backward's kernels on threads while the forward's kernel compiles and runs:
    Triton's compiler releases the GIL, so they compile at once instead of one after another
    (the first backward waits for them). Stand-ins for the backward's buffers have their dtypes, shapes
    and strides (gradients are allocated like q, k and v; dO is made contiguous like out; dLSE is
    materialized like lse), so the JIT specializes as it will then; where it does not, the backward
    compiles what it needs. Kernels the autotuner is about to tune are left to it."""
    t = BwdBuffers(do=out, dlse=lse, q=q, k=k_, v=v, out=out, lse=lse, delta=lse, lse2=lse,
                   dq=q, dk=k_, dv=v)
    Lq = q.shape[2]
    calls = [preprocess_call(k, t)]
    for kind in grad_kinds():
        if not autotune.will_tune(k, kind, Lq):  # (kernels about to be tuned compile as the tuner times them)
            calls.append(GRAD_KINDS[kind](k, t, tensors, scale, bm, autotune.chosen(k, kind, Lq)))
    pool = ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="attnforge-compile")
    k.ahead = [pool.submit(_compile_only, k, call, q.device) for call in calls]
    pool.shutdown(wait=False)
    for done in k.ahead:
        _PENDING.add(done)
        done.add_done_callback(_PENDING.discard)


def _compile_only(k: Kernels, call: Call, device) -> None:
    mod = k.modules[call.kind]
    with torch.cuda.device(device):
        getattr(mod, call.fn_name).warmup(*call.args, grid=mod.grid(*call.grid_args), **call.constexprs,
                                          **call.options)
    keep_jit_hashes(f"{k.key}_{call.kind}", mod)


def backward(k: Kernels, do, dlse, q, k_, v, out, lse, tensors: dict, scale: float, bm: BlockMask):
    """The backward's buffers: dq, dk, dv (per kv head: GQA groups are summed inside the kernel),
    delta and lse2 among them."""
    if k.ahead:
        _wait(k.ahead)
        k.ahead = []
    B, H, Lq, _ = q.shape
    delta = torch.empty(B, H, Lq, dtype=torch.float32, device=q.device)
    t = BwdBuffers(do.contiguous(), dlse.contiguous() if dlse is not None else None, q, k_, v, out, lse,
                   delta, torch.empty_like(delta), torch.empty_like(q), torch.empty_like(k_),
                   torch.empty_like(v))
    launch(k, preprocess_call(k, t))  # first: tuning candidates read delta and lse2
    for kind in grad_kinds():
        make = GRAD_KINDS[kind]
        cfg = autotune.config_for(k, kind, Lq, lambda c, make=make: make(k, t, tensors, scale, bm, c), launch)
        launch(k, make(k, t, tensors, scale, bm, cfg))
    return t
