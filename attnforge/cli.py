"""Command line: `attnforge inspect FILE.attn --stage {ir,passes,blocks,triton}`,
`attnforge aot FILE.attn` (compile every kernel for sm_90 and print registers, shared memory, spills)
and `attnforge bench` (attnforge vs flex vs SDPA on the GPU; `attnforge bench --help`)."""
from __future__ import annotations

import argparse
import os
import sys

from . import DSLError, compile as compile_variant
from .codegen import KINDS
from .runtime.variant import describe


def _constants(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, _, value = item.partition("=")
        out[name] = float(value) if "." in value else int(value)
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # its own options: attnforge bench --help
        from .bench import main as bench
        return bench(argv[1:])
    ap = argparse.ArgumentParser(prog="attnforge")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("bench", help="benchmark against torch.compile(flex_attention) and SDPA (GPU)")
    ins = sub.add_parser("inspect", help="print a variant's IR, passes, tile classification or kernels")
    ins.add_argument("file")
    ins.add_argument("--stage", choices=("ir", "passes", "blocks", "triton"), default="ir")
    ins.add_argument("--length", type=int, default=1024, help="sequence length for --stage blocks")
    aot = sub.add_parser("aot", help="compile the kernels for sm_90 without a GPU and report figures")
    aot.add_argument("file")
    aot.add_argument("--head-dim", type=int, default=128)
    for p in (ins, aot):
        p.add_argument("-D", dest="consts", action="append", default=[], metavar="NAME=VALUE",
                       help="override a declared constant")
    args = ap.parse_args(argv)
    try:
        v = compile_variant(args.file, **_constants(args.consts))
    except DSLError as err:
        print(err, file=sys.stderr)
        return 1
    if args.cmd == "aot":
        from .runtime.aot import compile_report
        from .runtime.cache import interpreting

        if interpreting():  # the AOT build needs Triton's compiler mode, chosen at import
            env = {**os.environ, "TRITON_INTERPRET": "0"}
            os.execve(sys.executable, [sys.executable, "-m", "attnforge.cli", *sys.argv[1:]], env)

        print(f"{'kernel':16} {'regs':>5} {'spill B':>8} {'smem B':>8} {'warps':>5}")
        for r in compile_report(v, D=args.head_dim):
            print(f"{r['kind']:16} {r['registers']:5} {r['spill_bytes']:8} {r['shared_bytes']:8} "
                  f"{r['num_warps']:5}")
        return 0
    if args.stage == "ir":
        print(v.ir, end="")
    elif args.stage == "passes":
        print(v.explain(), end="")
    elif args.stage == "blocks":
        print(describe(v.lowered), end="")
        if not v.program.params:
            print(v.block_mask(1, 1, args.length, args.length))
    else:
        for kind in KINDS:
            print(v.kernel_source(kind))
    return 0


if __name__ == "__main__":
    sys.exit(main())
