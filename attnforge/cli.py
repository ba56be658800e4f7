"""`attnforge inspect FILE.attn --stage {ir,passes,blocks}`."""
from __future__ import annotations

import argparse
import sys

from . import DSLError, compile as compile_variant
from .runtime.variant import describe


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="attnforge")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ins = sub.add_parser("inspect", help="print a variant's IR, passes or tile classification")
    ins.add_argument("file")
    ins.add_argument("--stage", choices=("ir", "passes", "blocks"), default="ir")
    ins.add_argument("-D", dest="consts", action="append", default=[], metavar="NAME=VALUE",
                     help="override a declared constant")
    args = ap.parse_args(argv)
    consts = {}
    for item in args.consts:
        name, _, value = item.partition("=")
        consts[name] = float(value) if "." in value else int(value)
    try:
        v = compile_variant(args.file, **consts)
    except DSLError as err:
        print(err, file=sys.stderr)
        return 1
    if args.stage == "ir":
        print(v.ir, end="")
    elif args.stage == "passes":
        print(v.explain(), end="")
    else:
        print(describe(v.lowered), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
