"""`Variant`: one compiled attention description, callable on tensors."""
from __future__ import annotations

import math
import os
from functools import lru_cache

import torch

from ..dsl import parse, parse_file, trace
from ..ir.errors import DSLError
from ..ir.printer import format_expr, print_program
from ..ir.program import Program
from ..passes import lower
from .. import reference as ref
from ..codegen import KINDS, SPARSE_BLOCK, Spec
from . import ops
from .blocks import BlockMask, build_block_mask
from .cache import load_lowered
from ..codegen import generate
from .launch import DTYPES
from .validate import check_inputs


@lru_cache(maxsize=512)
def lowered(prog: Program) -> Program:
    return load_lowered(prog, lower)


def describe(prog: Program) -> str:
    """DSL text plus the analyses the passes attach (block rules, derivatives) as comments."""
    lines = [print_program(prog).rstrip("\n")]
    for r in prog.block_rules:
        lines.append(f"# block rule `{r.select}`: may_true = {format_expr(r.may_true)}")
        lines.append(f"# block rule `{r.select}`: may_false = {format_expr(r.may_false)}")
    for g in prog.grads:
        lines.append(f"# d {g.branch} / d score = {format_expr(g.d_score)}")
        for load, d in g.d_loads:
            lines.append(f"# d {g.branch} / d {format_expr(load)} = {format_expr(d)}")
    return "\n".join(lines) + "\n"


class Variant:
    """An attention variant. Call it like `flex_attention`: `variant(q, k, v, **tensors)`."""

    def __init__(self, program: Program, tensors: dict | None = None):
        self.program = program
        self.tensors = dict(tensors or {})
        self.lowered = lowered(program)
        self._key = ops.register(self.lowered, program) if self.lowered.as_flex() else None
        self._passed: set = set()  # signatures of inputs that passed the checks (`check_inputs`)

    @property
    def ir(self) -> Program:
        """The IR as written; `print(variant.ir)` shows it as DSL text."""
        return self.program

    def explain(self) -> str:
        parts = []
        lower(self.program, on_pass=lambda name, p: parts.append(f"=== {name}\n{describe(p)}"))
        return "\n".join(parts)

    def _inputs(self, q, k, v, tensors: dict, enable_gqa: bool) -> dict:
        merged = {**self.tensors, **tensors}
        check_inputs(self.program, q, k, v, merged, enable_gqa=enable_gqa, passed=self._passed)
        return merged

    def reference(self, q, k, v, *, scale=None, enable_gqa=False, return_lse=False, **tensors):
        """Dense evaluation (float64 works): the oracle the kernels are tested against."""
        merged = self._inputs(q, k, v, tensors, enable_gqa)
        return ref.run_program(self.lowered, q, k, v, merged, scale=scale, enable_gqa=enable_gqa,
                               return_lse=return_lse)

    def __call__(self, q, k, v, *, scale=None, enable_gqa=False, return_lse=False, **tensors):
        """Runs the fused Triton kernels (CPU tensors: Triton's interpreter). float64 inputs, which
        the kernels do not take, are evaluated by the dense reference."""
        if q.dtype == torch.float64:
            return self.reference(q, k, v, scale=scale, enable_gqa=enable_gqa,
                                  return_lse=return_lse, **tensors)
        merged = self._inputs(q, k, v, tensors, enable_gqa)
        if q.shape[-1] > 256 or v.shape[-1] > 256:
            raise ValueError(f"q: expected head dims of at most 256, got D={q.shape[-1]}, "
                             f"Dv={v.shape[-1]}")
        scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
        if self._key is None:
            raise NotImplementedError(f"variant `{self.program.name}`: kernels exist for one "
                                      "softmax branch with a static mask; use .reference() for now")
        out, lse = ops.run(self._key, q, k, v, merged, scale)
        return (out, lse) if return_lse else out

    def kernel_source(self, kind: str = "fwd", *, dtype=torch.bfloat16, head_dim: int = 64,
                      head_dim_v: int | None = None, group: int = 1, device="cuda") -> str:
        """The generated Triton source of one kernel (one of KINDS: fwd, fwd_sm90, bwd_preprocess,
        bwd_dkdv, bwd_dq, bwd (dK/dV and dQ in one launch), bwd_diag) as it runs on `device` ("cpu":
        Triton's interpreter)."""
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        spec = Spec(DTYPES[dtype], head_dim, head_dim_v or head_dim, group)
        on_gpu = torch.device(device).type != "cpu"
        return generate(self.lowered, self.program, spec, on_gpu)[kind]

    def block_mask(self, B: int, H: int, Lq: int, Lk: int, *, block: int = SPARSE_BLOCK,
                   device="cpu", **tensors) -> BlockMask:
        """The tile classification the kernels use, for these sizes."""
        merged = {n: t.to(device) for n, t in {**self.tensors, **tensors}.items()}
        return build_block_mask(self.lowered, B, H, Lq, Lk, merged, block, block, device)

    def __repr__(self) -> str:
        return f"<attnforge.Variant {self.program.name}>"


def compile_variant(src=None, *, score_mod=None, mask_mod=None, name=None, **constants) -> Variant:
    if src is not None and (score_mod is not None or mask_mod is not None):
        raise ValueError("src: pass either DSL text/a path or score_mod=/mask_mod=, not both")
    if src is None:
        if constants:
            raise ValueError(f"{', '.join(constants)}: constants apply to DSL sources only; "
                             "Python mods capture their constants directly")
        if score_mod is None and mask_mod is None:
            raise ValueError("src: expected DSL text, a .attn path, or score_mod=/mask_mod=")
        prog, tensors = trace(score_mod, mask_mod, name)
        return Variant(prog, tensors)
    if not isinstance(src, (str, os.PathLike)):
        raise ValueError(f"src: expected DSL text or a path to a .attn file, got {type(src).__name__}")
    text = os.fspath(src)
    if "\n" not in text and text.endswith(".attn"):
        if not os.path.isfile(text):
            raise ValueError(f"src: no such .attn file: {text}")
        return Variant(parse_file(text, **constants))
    return Variant(parse(text, **constants))


def attention(q, k, v, score_mod=None, mask_mod=None, *, scale=None, enable_gqa=False,
              return_lse=False):
    prog, tensors = trace(score_mod, mask_mod)
    return Variant(prog, tensors)(q, k, v, scale=scale, enable_gqa=enable_gqa,
                                  return_lse=return_lse)


def block_mask(mask_mod, B: int, H: int, Lq: int, Lk: int, *, block: int = SPARSE_BLOCK,
               device="cpu") -> BlockMask:
    """Tile classification of a mask_mod (FlexAttention's create_block_mask, from the IR)."""
    return compile_variant(mask_mod=mask_mod).block_mask(B, H, Lq, Lk, block=block, device=device)


__all__ = ["Variant", "compile_variant", "attention", "block_mask", "DSLError"]
