"""`Variant`: one compiled attention description, callable on tensors."""
from __future__ import annotations

import os
from functools import lru_cache

from ..dsl import parse, parse_file, trace
from ..ir.errors import DSLError
from ..ir.printer import format_expr, print_program
from ..ir.program import Program
from ..passes import lower
from .. import reference as ref
from .validate import check_inputs


@lru_cache(maxsize=512)
def lowered(prog: Program) -> Program:
    return lower(prog)


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
        check_inputs(self.program, q, k, v, merged, enable_gqa=enable_gqa)
        return merged

    def reference(self, q, k, v, *, scale=None, enable_gqa=False, return_lse=False, **tensors):
        """Dense evaluation (float64 works): the oracle the kernels are tested against."""
        merged = self._inputs(q, k, v, tensors, enable_gqa)
        return ref.run_program(self.lowered, q, k, v, merged, scale=scale, enable_gqa=enable_gqa,
                               return_lse=return_lse)

    def __call__(self, q, k, v, *, scale=None, enable_gqa=False, return_lse=False, **tensors):
        # TODO(issue 4): run the generated Triton kernels; until then the dense reference runs.
        return self.reference(q, k, v, scale=scale, enable_gqa=enable_gqa, return_lse=return_lse,
                              **tensors)

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


__all__ = ["Variant", "compile_variant", "attention", "DSLError"]
