"""attnforge vs torch.compile(flex_attention) vs SDPA (flash, cuDNN), in one process, per case.

    python benchmarks/bench.py --quick                 # one shape, every case
    python benchmarks/bench.py --case causal --shape 2,8,4096,128

Forward and backward (forward+backward minus forward) are medians of CUDA-event timings after
warm-up (triton.testing.do_bench), on the same inputs for every implementation. TFLOP/s count only
unmasked work: the density of each mask is measured on the tile grid of the dense mask of one row
block at a time. Ratios are vs flex and vs cuDNN, from the same run.
"""
from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass, field

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge

SHAPES = [(16, 16, 2048, 128), (4, 16, 8192, 128), (4, 16, 8192, 64), (1, 16, 32768, 128)]


def causal(b, h, q, k):
    return q >= k


@dataclass
class Case:
    name: str
    mask_mod: object = None
    score_mod: object = None
    sdpa_causal: bool | None = None  # None: SDPA cannot express it
    hkv: int | None = None
    learnable: dict = field(default_factory=dict)


def cases(B: int, H: int, L: int, device="cuda") -> list[Case]:
    g = torch.Generator().manual_seed(0)
    doc_eq = torch.arange(L, device=device) // (L // 8)
    cuts = torch.sort(torch.randperm(L - 1, generator=g)[:7] + 1).values
    lengths = torch.diff(torch.cat([torch.tensor([0]), cuts, torch.tensor([L])]))
    doc_rand = torch.repeat_interleave(torch.arange(8), lengths).to(device)
    bias = (torch.randn(H, 2 * L - 1, generator=g) * 0.1).to(device).requires_grad_()

    def doc_mask(ids):
        return lambda b, h, q, k: (ids[q] == ids[k]) & (q >= k)

    def alibi(s, b, h, q, k):
        return s + (k - q) * torch.exp2(-((h + 1) * 8.0 / H))

    def softcap(s, b, h, q, k):
        return 30.0 * torch.tanh(s / 30.0)

    def rel_bias(s, b, h, q, k):
        return s + bias[h, q - k + (L - 1)]

    return [
        Case("full", sdpa_causal=False),
        Case("causal", causal, sdpa_causal=True),
        Case("sliding1024", lambda b, h, q, k: (q >= k) & (q - k < 1024)),
        Case("prefix_lm1024", lambda b, h, q, k: (k < 1024) | (q >= k)),
        Case("document8", doc_mask(doc_eq)),
        Case("document_random", doc_mask(doc_rand)),
        Case("alibi_causal", causal, alibi),
        Case("softcap30_causal", causal, softcap),
        Case("rel_bias_causal", causal, rel_bias, learnable={"bias": bias}),
        Case("gqa32:8_causal", causal, sdpa_causal=True, hkv=H // 4),
    ]


def density(mask_mod, L: int, device="cuda") -> float:
    if mask_mod is None:
        return 1.0
    kv = torch.arange(L, device=device)
    total = 0
    for r0 in range(0, L, 1024):
        q = torch.arange(r0, min(L, r0 + 1024), device=device)
        total += int(mask_mod(0, 0, q[:, None], kv[None, :]).sum())
    return total / (L * L)


def _time(fn, quick: bool) -> float:
    return triton.testing.do_bench(fn, warmup=25 if quick else 100, rep=100 if quick else 400,
                                   return_mode="median")


def run_case(case: Case, B: int, H: int, L: int, D: int, quick: bool) -> list[dict]:
    hq = 32 if case.name.startswith("gqa") else H
    hkv = 8 if case.name.startswith("gqa") else H
    q = torch.randn(B, hq, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(B, hkv, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(2))
    do = torch.randn_like(q)
    gqa = hq != hkv
    variant = attnforge.compile(score_mod=case.score_mod, mask_mod=case.mask_mod) \
        if case.score_mod or case.mask_mod else attnforge.compile("attention full() { }")
    torch._dynamo.reset()  # a fresh compile per case: no recompile limit, no eager fallback
    flex = torch.compile(flex_attention)
    bm = create_block_mask(case.mask_mod, B, hq, L, L, device="cuda") if case.mask_mod else None
    impls = {"attnforge": lambda: variant(q, k, v, enable_gqa=gqa),
             "flex": lambda: flex(q, k, v, score_mod=case.score_mod, block_mask=bm, enable_gqa=gqa)}
    for backend, name in ((SDPBackend.FLASH_ATTENTION, "sdpa_flash"),
                          (SDPBackend.CUDNN_ATTENTION, "sdpa_cudnn")):
        if case.sdpa_causal is not None:
            def sdpa(backend=backend):
                with sdpa_kernel([backend]):
                    return torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, is_causal=case.sdpa_causal, enable_gqa=gqa)
            impls[name] = sdpa
    flops = 4 * B * hq * L * L * D * density(case.mask_mod, L)
    rows = []
    for name, fn in impls.items():
        def fwd_bwd(fn=fn):
            q.grad = k.grad = v.grad = None
            for t in case.learnable.values():
                t.grad = None
            fn().backward(do)
        try:
            t_f = _time(fn, quick)
            t_b = _time(fwd_bwd, quick) - t_f
        except Exception as err:  # noqa: BLE001 - an implementation that cannot run this case
            print(f"  {case.name} {name}: {type(err).__name__}: {str(err)[:100]}")
            continue
        rows.append({"case": case.name, "shape": (B, hq, L, D), "impl": name, "fwd_ms": t_f,
                     "bwd_ms": t_b, "fwd_tflops": flops / t_f / 1e9,
                     "bwd_tflops": 2.5 * flops / t_b / 1e9})
    return rows


def table(rows: list[dict]) -> str:
    by = {(r["case"], r["shape"], r["impl"]): r for r in rows}
    out = ["| case | shape | impl | fwd ms | bwd ms | fwd TF/s | bwd TF/s | fwd/flex | bwd/flex "
           "| fwd/cuDNN |", "|" + "---|" * 10]
    for r in rows:
        flex = by.get((r["case"], r["shape"], "flex"))
        cudnn = by.get((r["case"], r["shape"], "sdpa_cudnn"))
        ratio = (lambda a, b: f"{a / b:.2f}" if b else "-")
        out.append(f"| {r['case']} | {','.join(map(str, r['shape']))} | {r['impl']} | "
                   f"{r['fwd_ms']:.3f} | {r['bwd_ms']:.3f} | {r['fwd_tflops']:.0f} | "
                   f"{r['bwd_tflops']:.0f} | {ratio(flex['fwd_ms'], r['fwd_ms']) if flex else '-'} | "
                   f"{ratio(flex['bwd_ms'], r['bwd_ms']) if flex else '-'} | "
                   f"{ratio(cudnn['fwd_ms'], r['fwd_ms']) if cudnn else '-'} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="first shape only, shorter timings")
    ap.add_argument("--case", default=None, help="one case by name (default: all)")
    ap.add_argument("--shape", default=None, help="B,H,L,D (default: the issue's shapes)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()
    shapes = [tuple(map(int, args.shape.split(",")))] if args.shape else \
        SHAPES[:1] if args.quick else SHAPES
    rows = []
    for B, H, L, D in shapes:
        for case in cases(B, H, L):
            if args.case and case.name != args.case:
                continue
            rows += run_case(case, B, H, L, D, args.quick)
            print(table([r for r in rows if r["case"] == case.name and r["shape"][2] == L]),
                  flush=True)
    head = (f"{datetime.date.today()} {torch.cuda.get_device_name()}, torch {torch.__version__}, "
            f"triton {triton.__version__}, bf16")
    text = f"{head}\n\n{table(rows)}\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
