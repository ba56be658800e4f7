"""Codegen: a lowered Program + a specialization -> Triton source per kernel kind (jinja2)."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources

import jinja2

from ..ir.expr import Const, Var, walk
from ..ir.printer import format_expr, print_program
from ..ir.program import Program
from ..passes.affine import AffineScore, affine_score
from ..passes.rows import hoist_rows, separate
from ..passes.toeplitz import distance_tables, toeplitz_loads
from .configs import SPARSE_BLOCK, TileConfig, tile_config
from .render import DISTANCE, Axis, captured, loaded_params, render_block, render_blocks, table_name

KINDS = ("fwd", "fwd_sm90", "bwd_preprocess", "bwd_dkdv", "bwd_dq", "bwd", "bwd_diag")
TEMPLATE = {"fwd": "fwd.py.jinja", "fwd_sm90": "fwd_sm90.py.jinja", "bwd_preprocess": "bwd.py.jinja",
            "bwd_dkdv": "bwd.py.jinja", "bwd_dq": "bwd.py.jinja", "bwd": "bwd.py.jinja", "bwd_diag": "diag.py.jinja"}
# Triton names that Gluon (the sm_90 forward's dialect) lacks: a variant whose score or mask needs
# one runs the Triton forward everywhere
_NOT_IN_GLUON = ("gl.sigmoid",)
# q rows x kv columns (fwd, dq) and the transposed orientation of the dK/dV kernel
ROWS_Q = {"q_idx": Axis("o_m[:, None]", "m_m[:, None]"), "kv_idx": Axis("o_n[None, :]", "m_n[None, :]")}
ROWS_KV = {"q_idx": Axis("o_m[None, :]", "m_m[None, :]"), "kv_idx": Axis("o_n[:, None]", "m_n[:, None]")}
# bwd_diag's tiles (rows are queries) walk a diagonal band: every tile has the same q_idx - kv_idx
# (`d_band`), so distance-table reads are loop-invariant (Triton hoists them out of the loop)
ROWS_DIAG = {**ROWS_Q, DISTANCE: Axis("d_band")}
# The Gluon forward reads captured tensors without the rows' and columns' masks (the reads are in
# bounds: clamped): rel_bias's forward at 16,16,2048,128 took 1.03 ms instead of 1.29 on the H100
# (measured before distance tables took its reads). The backward's tiles keep them: unmasked, ptxas
# spilled more there (rel_bias at head dim 128: 504 bytes instead of 344) and its backward ran 10%
# slower (3.77 vs 3.44 ms).
ROWS_Q_UNMASKED = {name: Axis(axis.code) for name, axis in ROWS_Q.items()}
SCALARS = {"b": "i_b", "h": "i_h", "score": "qk"}
AFFINE_SCALARS = {**SCALARS, "q0": "q0"}  # q0: the first row of the query tile (passes/affine.py)


@dataclass(frozen=True)
class Spec:
    """What a kernel is specialized on. Lengths, batch and heads are runtime arguments."""

    dtype: str      # "float16" | "bfloat16" | "float32"
    d: int
    dv: int
    group: int      # query heads per kv head

    @cached_property  # (read on every launch; a frozen dataclass's __dict__ takes it)
    def block_d(self) -> int:
        return max(16, 1 << (self.d - 1).bit_length())

    @cached_property
    def block_dv(self) -> int:
        return max(16, 1 << (self.dv - 1).bit_length())


@cache
def _env() -> jinja2.Environment:
    root = resources.files(__package__) / "templates"
    sources = {p.name: p.read_text() for p in root.iterdir() if p.name.endswith(".jinja")}
    return jinja2.Environment(loader=jinja2.DictLoader(sources), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=False)


def ir_hash(prog: Program) -> str:
    return hashlib.sha256(repr(prog).encode()).hexdigest()[:16]


@cache
def template_hash() -> str:
    """Hash of everything that shapes generated code: the templates and the codegen modules."""
    root = resources.files(__package__)
    files = sorted([*root.iterdir(), *(root / "templates").iterdir()], key=lambda p: p.name)
    text = "".join(p.read_text() for p in files if p.name.endswith((".py", ".jinja")))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plain_scores(prog: Program) -> bool:
    """The variant's softmax takes the scores as they are (no score_mod; a mask may still apply)."""
    flex = prog.as_flex()
    return flex is not None and flex[0] == Var("score", "float")


def linear_scores(prog: Program) -> bool:
    """The score_mod adds to the score or leaves it (d score_mod / d score = 1: none, ALiBi, a
    bias): the backward computes no derivative of it."""
    return prog.as_flex() is not None and len(prog.grads) == 1 and prog.grads[0].d_score == Const(1.0, "float")


def score_reads(prog: Program) -> bool:
    """The score_mod reads captured tensors (a learnable bias ...)."""
    flex = prog.as_flex()
    return flex is not None and bool(loaded_params(flex[0]))


def _context(prog: Program, source: Program, spec: Spec) -> dict:
    flex = prog.as_flex()
    if flex is None:
        raise NotImplementedError(f"variant `{prog.name}`: kernels exist for one softmax branch "
                                  "with a static mask; other branch kinds come in later issues")
    score, mask = flex
    (grad,) = prog.grads
    params = captured_params(prog)
    tables = {load: j for j, load in enumerate(distance_tables(prog))}
    sig = "".join(f" p_{captured(p)}," + "".join(f" s_{captured(p)}_{d}, n_{captured(p)}_{d},"
                                                 for d in range(len(prog.param(p).shape)))
                  for p in params)
    sig += "".join(f" p_{t}, s_{t}_0, s_{t}_1," for t in (table_name(j, load) for load, j in tables.items()))
    identity = plain_scores(prog)
    aff = affine_score(prog)
    dscore_one = linear_scores(prog)

    def block(e, target, axes, indent=4, prefix="t"):
        code = render_block(e, target, axes, SCALARS, prefix, indent=" " * indent, tables=tables)
        return _tile_shaped(code, e, indent) if target == "z" else code

    def score_and_grad(axes) -> tuple[str, str]:
        """score_mod (`z`) and its derivative (`g`) for a backward tile: one rendering, so the
        derivative reuses what the score computed; the mask between them names with `u`."""
        items = ([] if identity else [(score, "z")]) + ([] if dscore_one else [(grad.d_score, "g")])
        blocks = render_blocks(items, axes, SCALARS, indent=" " * 4, tables=tables)
        z = "" if identity else _tile_shaped(blocks.pop(0), score, 4)
        return z, "" if dscore_one else blocks[0]

    score_gl, mask_gl, mask_rows_gl, mask_rows_sig = _gluon_blocks(prog, tables)
    (score_q, dscore_q), (score_kv, dscore_kv) = score_and_grad(ROWS_Q), score_and_grad(ROWS_KV)
    ctx = {
        "name": prog.name, "ir_hash": ir_hash(prog),
        "score_fwd_gl": score_gl, "mask_fwd_gl": mask_gl, "mask_rows_gl": mask_rows_gl, "mask_rows_sig": mask_rows_sig,
        "source_lines": print_program(source).rstrip("\n").splitlines(),
        "dtype": spec.dtype, "d": spec.d, "dv": spec.dv, "group": spec.group,
        "param_sig": sig, "param_args": sig,
        "has_mask": mask is not None, "score_is_identity": identity, "dscore_is_one": dscore_one,
        # the forwards' score_mod as a_s * score + z_c, with z_c's row part moved to the LSE (z_r)
        **_affine_blocks(aff, tables),
        # the dQ tile (rows are queries, as the forward) and the dK/dV tile (rows are keys)
        "score_fwd": score_q, "dscore_fwd": dscore_q, "score_bwd": score_kv, "dscore_bwd": dscore_kv,
        # masks with their parts that read only the program's fixed index once per program
        **_program_masks(mask, tables),
        # bwd_diag: gradients of learnable reads indexed by q_idx - kv_idx
        "score_diag": "" if identity else block(score, "z", ROWS_DIAG, 8),
        "mask_diag": "" if mask is None else block(mask, "t_keep", ROWS_DIAG, 12),
        "diag_loads": [{"i": i, "param": grad.d_loads[i][0].param, "text": format_expr(grad.d_loads[i][0]),
                        "code": block(grad.d_loads[i][1], "dl", ROWS_DIAG, 8)}
                       for i in toeplitz_loads(prog)],
    }
    # the helper functions (`_floordiv`, `_tanh` ...) the rendered code calls: a module defines only those
    code = " ".join([*(v for v in ctx.values() if isinstance(v, str)), *(d["code"] for d in ctx["diag_loads"])])
    ctx["helpers"] = sorted(set(re.findall(r"\b(_floordiv|_floormod|_tanh|_sign|_pow|_ld_nc|_ld_nc_masked)\(", code)))
    return ctx


def _program_masks(mask, tables: dict) -> dict:
    """The Triton kernels' masks (`_mask_blocks`): `mask_fwd` for tiles of fixed query rows (the
    forward and dQ; its hoisted parts `mask_fwd_rows`, names `mask_fwd_sig`), `mask_bwd` for tiles of
    fixed keys (dK/dV, whose parts run inside its loop over the query heads of a GQA group)."""
    if mask is None:
        return dict.fromkeys(("mask_fwd", "mask_fwd_rows", "mask_fwd_sig", "mask_bwd", "mask_bwd_rows",
                              "mask_bwd_sig"), "")
    out = {}
    for o, fixed, axes, indent in (("fwd", "q_idx", ROWS_Q, 4), ("bwd", "kv_idx", ROWS_KV, 8)):
        out[f"mask_{o}"], out[f"mask_{o}_rows"], out[f"mask_{o}_sig"] = _mask_blocks(mask, fixed, axes, indent, tables)
    return out


def _affine_blocks(aff: AffineScore | None, tables: dict) -> dict:
    """The forwards' blocks of an affine score_mod (`passes/affine.py`): the slope `a_s` (a
    scalar), the offset `z_c` (a vector of the tile's columns at the tile's first row `q0` where
    the offset separates, else per score) and the row part `z_r` for the LSE (a vector of rows), in
    Triton (`affine_*`) and Gluon (`affine_*_gl`: unmasked reads) spellings."""
    if aff is None:
        return {"affine": False, "affine_row": "", "affine_row_gl": ""}
    out = {"affine": True}
    row = aff.row_offset() if aff.separable else None
    offset = aff.col_offset() if aff.separable else aff.offset
    for suffix, axes, row_axis in (("", ROWS_Q, Axis("o_m", "m_m")), ("_gl", ROWS_Q_UNMASKED, Axis("o_m"))):
        blocks = render_blocks([(aff.scale, "a_s"), (offset, "z_c")], axes, AFFINE_SCALARS, "a", " " * 4, tables)
        if row is not None:
            blocks.append(render_block(row, "z_r", {"q_idx": row_axis}, AFFINE_SCALARS, "a", " " * 4, tables))
        blocks = [b.replace("tl.", "gl.") if suffix else b for b in blocks]
        out["affine_scale" + suffix], out["affine_offset" + suffix] = blocks[:2]
        out["affine_row" + suffix] = blocks[2] if row is not None else ""
    return out


def _tile_shaped(code: str, score, indent: int) -> str:
    """score_mod's block, its `z` broadcast to the tile where the score_mod never reads `score`."""
    return code + f"\n{' ' * indent}z = tl.broadcast_to(z, qk.shape)" if _ignores_score(score) else code


def _ignores_score(score) -> bool:
    """A score_mod that never reads `score` (its value lacks the tile's shape: the kernels broadcast it)."""
    return not any(isinstance(n, Var) and n.name == "score" for n in walk(score))


def _gluon_blocks(prog: Program, tables: dict | None = None) -> tuple[str, str, str, str]:
    """score_mod and mask_mod for the sm_90 forward: the Triton statements in Gluon, whose
    elementwise ops carry Triton's names (indented for the template's softmax step). The mask's
    comparisons take the form `rows op kv_idx` and its row-only parts are computed once per program
    (`passes/rows.py`): also returned, the block computing those (`mrow0` ...) before the loop over
    key tiles, and their names as arguments (`" mrow0, mrow1,"`)."""
    score, mask = prog.as_flex()
    score_gl = mask_gl = rows_gl = rows_sig = ""
    if score != Var("score", "float"):
        score_gl = render_block(score, "z", ROWS_Q_UNMASKED, SCALARS, indent=" " * 4, tables=tables)
        if _ignores_score(score):  # Gluon has no broadcast_to
            score_gl += "\n    z = z + tl.zeros_like(qk)"
    if mask is not None:
        mask_gl, rows_gl, rows_sig = _mask_blocks(mask, "q_idx", ROWS_Q_UNMASKED, 4, tables)
    return (*(code.replace("tl.", "gl.") for code in (score_gl, mask_gl, rows_gl)), rows_sig)


def _mask_blocks(mask, fixed: str, axes: dict, indent: int, tables: dict | None) -> tuple[str, str, str]:
    """mask_mod for a program whose tiles share the index `fixed` (q_idx: forwards and dQ; kv_idx:
    dK/dV), as `passes/rows.py` splits it: (the tile's block, assigning `keep`; the block computing
    the parts that read only `fixed` once per program, `mrow0` ... or `mcol0` ..., at `indent`;
    their names as arguments, `" mrow0, mrow1,"`)."""
    other = "kv_idx" if fixed == "q_idx" else "q_idx"
    mask, parts = hoist_rows(separate(mask, other), fixed)
    names = {name: ("mrow" if fixed == "q_idx" else "mcol") + name[len("__row"):] for name, _ in parts}
    tile = render_block(mask, "keep", axes, {**SCALARS, **names}, "u", " " * 8, tables)
    if not parts:
        return tile, "", ""
    prog = f"\n{' ' * indent}".join(render_blocks([(sub, names[name]) for name, sub in parts],
                                                  {fixed: axes[fixed]}, SCALARS, "v", " " * indent, tables))
    return tile, prog, "".join(f" {n}," for n in names.values())


def sm90_forward(prog: Program, spec: Spec) -> bool:
    """The Gluon forward (`fwd_sm90`) covers this variant and specialization: 16-bit inputs, head
    dims padded to 64 or 128 (the same for V), and score and mask expressions Gluon can spell."""
    if spec.dtype not in ("float16", "bfloat16") or spec.block_d not in (64, 128) or spec.block_dv != spec.block_d:
        return False
    # (distance tables change reads only, none of the operations looked for)
    return not any(n in code for code in _gluon_blocks(prog) for n in _NOT_IN_GLUON)


def fast_math(spec: Spec, on_gpu: bool) -> bool:
    """tanh through the special-function unit: on a GPU, for 16-bit inputs (whose rounding is
    coarser than its error); never under the interpreter or for float32."""
    return on_gpu and spec.dtype in ("float16", "bfloat16")


def generate(prog: Program, source: Program, spec: Spec, on_gpu: bool = False) -> dict[str, str]:
    """Triton module source for every kernel kind. `prog` is lowered, `source` as the user wrote it.
    `on_gpu` (else Triton's interpreter): transcendental functions the kernels evaluate on scores
    (tanh) use the GPU's special-function unit (PTX `.approx`) for 16-bit inputs (`fast_math`), and
    distance tables are read through the read-only cache (`_ld_nc`, PTX `ld.global.nc`)."""
    ctx = {**_context(prog, source, spec), "fast_math": fast_math(spec, on_gpu), "on_gpu": on_gpu}
    return {kind: _tidy(_env().get_template(TEMPLATE[kind]).render(kind=kind, spec=ctx)) for kind in KINDS}


def _tidy(source: str) -> str:
    """At most two blank lines in a row (the templates' blocks for other kinds leave more) and one
    newline at the end."""
    return re.sub(r"\n{4,}", "\n\n\n", source).rstrip("\n") + "\n"


def captured_params(prog: Program) -> list[str]:
    """Captured tensors the kernels read, in kernel-argument order."""
    score, mask = prog.as_flex()
    (grad,) = prog.grads
    return loaded_params(score, *([mask] if mask is not None else []), grad.d_score)


__all__ = ["KINDS", "Spec", "TileConfig", "SPARSE_BLOCK", "generate", "fast_math", "sm90_forward", "plain_scores", "linear_scores",
           "score_reads",
           "tile_config", "ir_hash", "template_hash", "captured_params"]
