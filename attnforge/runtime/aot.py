"""Ahead-of-time compilation of a variant's kernels for Hopper (sm_90) without a GPU.

`compile_report` builds every kernel with Triton's compiler for GPUTarget("cuda", 90, 32) and reads
registers, spills and shared memory from the cubin. Needs a process where Triton is in compiler mode
(TRITON_INTERPRET unset when triton was imported)."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from .. import codegen
from ..codegen import SPARSE_BLOCK, Spec, TileConfig
from ..codegen.render import table_name
from ..dsl.trace import TORCH_DTYPES
from .blocks import band_lists, meta_block_mask
from .launch import DTYPES, GRAD_KINDS, BwdBuffers, Call, fwd_call, kernels_for, preprocess_call
from ..codegen.configs import diag_config, sm90_config, tile_config
from .param_grads import diag_call
from .tables import layout as table_layout

TARGET = GPUTarget("cuda", 90, 32)
_NARROW_COPY = re.compile(r"cp\.async\.c[ag]\.shared\.global(?:\.L2::\w+)? \[[^\]]+\], \[[^\]]+\], 0x4\b")
PARAM_DTYPES = {name: dt for dt, name in TORCH_DTYPES.items()}
TORCH_TO_TRITON = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32",
                   torch.int32: "i32", torch.int64: "i64", torch.int8: "i8", torch.uint8: "u8",
                   torch.int16: "i16", torch.bool: "i1", torch.float64: "fp64"}


def _signature(fn, call: Call) -> tuple[dict, dict, dict]:
    """Triton's signature, constexprs and attributes for `call`'s arguments, specialized as the JIT
    specializes a launch on real inputs: integers equal to 1 (unit strides) become constants,
    pointers (16-byte aligned) and integers that are multiples of 16 are marked divisible by 16
    (without that knowledge loads are neither vectorized nor pipelined)."""
    names = [n for n in fn.arg_names if n not in call.constexprs]
    sig, attrs, consts = {}, {}, dict(call.constexprs)
    params = {p.name: p for p in fn.params}
    for name, a in zip(names, call.args):
        specialize = not getattr(params[name], "do_not_specialize", False)
        if specialize and type(a) is int and a == 1:
            consts[name] = 1
            continue
        if isinstance(a, torch.Tensor) or (specialize and not isinstance(a, bool) and isinstance(a, int)
                                           and a % 16 == 0):
            attrs[(fn.arg_names.index(name),)] = [["tt.divisibility", 16]]
        if hasattr(a, "block_shape"):  # a Gluon TMA descriptor
            sig[name] = (f"tensordesc<{TORCH_TO_TRITON[a.base.dtype]}[{','.join(map(str, a.block_shape))}],"
                         f"{a.layout!r}>")
        elif isinstance(a, torch.Tensor):
            sig[name] = "*" + TORCH_TO_TRITON[a.dtype]
        elif isinstance(a, bool):
            sig[name] = "i1"
        elif isinstance(a, int):
            sig[name] = "i32" if -2 ** 31 <= a < 2 ** 31 else "i64"
        else:
            sig[name] = "fp32"
    sig.update({n: "constexpr" for n in consts})
    return {n: sig[n] for n in fn.arg_names}, consts, attrs


def _asm_in_loops(ttgir: str) -> int:
    """Inline-assembly ops (the read-only-cache loads of `_ld_nc`) inside an `scf.for` body of the
    TTGIR: those Triton did not hoist out of a loop."""
    inside, depth, loops = 0, 0, []
    for line in ttgir.splitlines():
        if "scf.for" in line:
            loops.append(depth)
        if loops and "elementwise_inline_asm" in line:
            inside += 1
        depth += line.count("{") - line.count("}")
        while loops and depth <= loops[-1]:
            loops.pop()
    return inside


def _cubin_stats(cubin: bytes) -> dict:
    """Registers and spilled bytes per thread, from cuobjdump's resource usage: spills live in the
    stack frame (STACK; Triton inlines every call, so the frame holds nothing else) and LOCAL."""
    tool = Path(triton.knobs.nvidia.ptxas.path).with_name("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        res = subprocess.run([str(tool), "--dump-resource-usage", f.name], capture_output=True,
                             text=True)
    text = res.stdout + res.stderr
    regs = re.search(r"REG:(\d+)", text)
    frame = [re.search(rf"{field}:(\d+)", text) for field in ("STACK", "LOCAL")]
    return {"registers": int(regs.group(1)) if regs else -1,
            "spill_bytes": sum(int(m.group(1)) for m in frame) if all(frame) else -1}


def compile_report(variant, dtype=torch.bfloat16, D: int = 128, Dv: int | None = None,
                   group: int = 1, tensors: dict | None = None, kinds=None,
                   sm90: TileConfig | None = None) -> list[dict]:
    """Compile fwd (and fwd_sm90 where it applies, with its default tile or `sm90`), bwd_preprocess,
    bwd (dK/dV and dQ in one launch), bwd_dkdv and bwd_dq (and bwd_diag) for sm_90, or only `kinds`;
    one dict of figures per kernel."""
    Dv = Dv or D
    spec = Spec(DTYPES[dtype], D, Dv, group)
    kern = kernels_for(variant.lowered, variant.program, spec, torch.device("meta"))
    # the sm_90 Gluon forward, where it covers the variant, besides the Triton one
    kern.sm90 = codegen.sm90_forward(variant.lowered, spec)
    kern.tma = True
    B, H, L = 2, 2 * group, 1024

    def meta(*shape, dt=dtype):
        return torch.empty(*shape, dtype=dt, device="meta")

    q, k, v = meta(B, H, L, D), meta(B, H // group, L, D), meta(B, H // group, L, Dv)
    out, do, lse = meta(B, H, L, Dv), meta(B, H, L, Dv), meta(B, H, L, dt=torch.float32)
    n = L // SPARSE_BLOCK
    bm = meta_block_mask(L, L, SPARSE_BLOCK, SPARSE_BLOCK)
    named = {p.name: torch.empty(p.shape if all(isinstance(d, int) for d in p.shape) else (4,) *
                                 len(p.shape), dtype=PARAM_DTYPES[p.dtype], device="meta")
             for p in variant.lowered.params}
    named.update(tensors or {})
    for j, table in enumerate(kern.tables):  # distance tables: their views (runtime/tables.py)
        nb, nh, row, off = table_layout(table, B, H, L, L)
        named[table_name(j, table.load)] = torch.empty(nb, nh, row, dtype=named[table.load.param].dtype,
                                                       device="meta")[..., off:]
    calls = [fwd_call(kern, q, k, v, out, lse, named, 0.125, bm, tile_config("fwd", spec.block_d))]
    if kern.sm90:  # (by default the Gluon forward's long-program tile)
        calls.append(fwd_call(kern, q, k, v, out, lse, named, 0.125, bm, sm90 or sm90_config(spec.block_d, plain=True)))
    buffers = BwdBuffers(do, lse, q, k, v, out, lse, lse, lse, q, k, v)
    # preprocess, the one-launch backward (the default) and dK/dV and dQ as two launches
    # (ATTNFORGE_FUSED_BWD=0)
    calls += [preprocess_call(kern, buffers), *(make(kern, buffers, named, 0.125, bm) for make in GRAD_KINDS.values())]
    for i in kern.diag_loads:  # learnable reads indexed by q_idx - kv_idx
        cfg = diag_config(spec.block_d, spec.dtype)
        bands = band_lists(meta(1, 1, n, n, dt=torch.int8))
        part = meta(B * H, 2 * n - 1, 2 * cfg.block_m - 1, dt=torch.float32)
        calls.append(diag_call(kern, i, buffers, named, 0.125, bands, part, cfg))
    report = []
    for call in calls:
        if kinds is not None and call.kind not in kinds:
            continue
        fn = getattr(kern.modules[call.kind], call.fn_name)
        sig, consts, attrs = _signature(fn, call)
        # kernels that walk tiles compile twice: tiles through TMA descriptors, and through pointers
        for tma in ((False, True) if "USE_TMA" in consts else (None,)):
            if tma is not None:
                consts["USE_TMA"] = tma
            if call.kind == "fwd_sm90":
                from triton.experimental.gluon._runtime import GluonASTSource as Source
            else:
                Source = ASTSource
            source = Source(fn, sig, dict(consts), attrs)
            compiled = triton.compile(source, target=TARGET, options=call.options)
            stats = _cubin_stats(compiled.asm["cubin"])
            # special-function-unit instructions of fast math (e.g. tanh.approx.f32)
            ptx = compiled.asm["ptx"]
            approx = sorted(set(re.findall(r"\b(\w+)\.approx(?:\.ftz)?\.f32", ptx)))
            report.append({"kind": call.kind + (" tma" if tma else ""), "shared_bytes": compiled.metadata.shared,
                           "num_warps": compiled.metadata.num_warps, "approx": approx,
                           # reads through the read-only cache (distance tables: `_ld_nc`) and
                           # software-pipelined copies into shared memory of one 4-byte element each
                           "nc_loads": ptx.count("ld.global.nc"), "narrow_copies": len(_NARROW_COPY.findall(ptx)),
                           "nc_in_loops": _asm_in_loops(compiled.asm["ttgir"]),
                           **stats})
    return report
