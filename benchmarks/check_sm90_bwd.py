"""GPU check of the sm_90 Gluon backward (`bwd_sm90`) through attnforge's API, then its time against
the Triton backward (what deterministic mode runs) and torch.compile(flex_attention)'s, in one process.

    python benchmarks/check_sm90_bwd.py [--check] [--time 16,16,2048,128 ...] [--cases full causal ...]

--check: every example variant x (1000^2, 333x520 GQA 4:2, D=72) against the float64 reference with
flex's rule for dQ, dK, dV and learnable tensors' gradients; which backward kernels ran; dK and dV
bitwise equal over two runs; deterministic mode runs the Triton kernels and repeats dQ bit for bit.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge
from attnforge import bench
from attnforge.codegen import configs
from attnforge.runtime import launch

RAN: list[str] = []


def _record():
    real = launch.launch

    def spy(k, call, *a, **kw):
        RAN.append(call.kind if call.fn_name != "attn_bwd_dq_convert" else "dq_convert")
        return real(k, call, *a, **kw)
    launch.launch = spy


def _grads(v, q, k, vv, do, tensors, gqa, ref=False):
    leaves = [q, k, vv, *[t for t in tensors.values() if t.is_floating_point()]]
    leaves = [x.detach().clone().requires_grad_() for x in leaves]
    q_, k_, v_ = leaves[:3]
    named = dict(tensors)
    for name, leaf in zip([n for n, t in tensors.items() if t.is_floating_point()], leaves[3:]):
        named[name] = leaf
    fn = v.reference if ref else v
    out = fn(q_, k_, v_, enable_gqa=gqa, **named)
    out.backward(do.to(out.dtype))
    return [x.grad for x in leaves]


def check():
    torch.manual_seed(0)
    for path in sorted(glob.glob("examples/*.attn")):
        name = os.path.basename(path)[:-5]
        v = attnforge.compile(path, **({"MAX_LEN": 1024} if name == "rel_bias" else {}))
        for B, Hq, Hk, Lq, Lk, D in [(2, 4, 4, 1000, 1000, 128), (1, 4, 2, 333, 520, 128), (2, 2, 2, 300, 300, 72)]:
            if name == "document" and Lq != Lk:
                continue
            q = torch.randn(B, Hq, Lq, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, Hk, Lk, D, device="cuda", dtype=torch.bfloat16)
            vv = torch.randn(B, Hk, Lk, D, device="cuda", dtype=torch.bfloat16)
            do = torch.randn(B, Hq, Lq, D, device="cuda", dtype=torch.bfloat16)

            def dims(shape):
                return [s if isinstance(s, int) else Hq if s == "H" else Lq if s == "L" else 2047 for s in shape]

            tensors = {p.name: torch.randn(*dims(p.shape), device="cuda") * 0.1 if p.dtype.startswith("f")
                       else torch.randint(0, 3, dims(p.shape), device="cuda").sort().values.to(torch.int32)
                       for p in v.lowered.params}
            gqa = Hq != Hk
            label = f"{name:16} {B},{Hq},{Hk},{Lq},{Lk},{D}"
            try:
                RAN.clear()
                got = _grads(v, q, k, vv, do, tensors, gqa)
                ran = sorted(set(RAN) - {"fwd", "fwd_sm90"})
                again = _grads(v, q, k, vv, do, tensors, gqa)
                gold = _grads(v, q.double(), k.double(), vv.double(), do, {n: t.double() if t.is_floating_point()
                              else t for n, t in tensors.items()}, gqa, ref=True)
                low = _grads(v, q, k, vv, do, tensors, gqa, ref=True)
                torch.use_deterministic_algorithms(True)
                RAN.clear()
                det = _grads(v, q, k, vv, do, tensors, gqa)
                det_ran = sorted(set(RAN) - {"fwd", "fwd_sm90"})
                det2 = _grads(v, q, k, vv, do, tensors, gqa)
            except Exception as e:  # noqa: BLE001
                print(f"{label}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                continue
            finally:
                torch.use_deterministic_algorithms(False)
            ok, parts = True, []
            for i, (g, gg, lo, d) in enumerate(zip(got, gold, low, det)):
                err = (g.double() - gg).abs().max().item()
                lim = 2 * (lo.double() - gg).abs().max().item() + 1e-3
                derr = (d.double() - gg).abs().max().item()
                ok &= err <= lim and derr <= lim and not g.isnan().any()
                parts.append(f"{'qkv'[i] if i < 3 else 'p'} {err:.1e}/{lim:.1e}")
            same_kv = all(torch.equal(a, b) for a, b in zip(got[1:], again[1:]))
            same_det = all(torch.equal(a, b) for a, b in zip(det, det2))
            ok &= same_kv and same_det
            print(f"{label}: ran {ran} det {det_ran} | {' '.join(parts)} | dK/dV/params repeat {same_kv} "
                  f"dQ repeat {torch.equal(got[0], again[0])} det repeat {same_det} {'OK' if ok else 'FAIL'}",
                  flush=True)


def time_cases(shapes, names, options):
    for shape in shapes:
        B, H, L, D = map(int, shape.split(","))
        for case in bench.cases(B, H, L):
            if names and case.name not in names:
                continue
            variant, q, k, v = bench.case_inputs(case, B, H, L, D)
            gqa = q.shape[1] != k.shape[1]
            do = torch.randn_like(q)
            torch._dynamo.reset()
            flex = torch.compile(flex_attention)
            bm = create_block_mask(case.mask_mod, None, None, L, L, device="cuda", _compile=True) \
                if case.mask_mod else None
            flops = 2.5 * 4 * B * q.shape[1] * L * L * D * bench.density(case.mask_mod, L)

            def bwd_time(fn):
                out = fn()
                t = bench._time(lambda: torch.autograd.grad(out, [q, k, v], do, retain_graph=True), True)
                return t
            res = {}
            for opt in options:
                launch.SM90_BWD = dataclasses.replace(configs.SM90_BWD, num_stages=int(opt))
                res[f"gluon s{opt}"] = bwd_time(lambda: variant(q, k, v, enable_gqa=gqa))
            launch.SM90_BWD = configs.SM90_BWD
            torch.use_deterministic_algorithms(True)
            try:
                res["triton"] = bwd_time(lambda: variant(q, k, v, enable_gqa=gqa))
            finally:
                torch.use_deterministic_algorithms(False)
            res["flex"] = bwd_time(lambda: flex(q, k, v, score_mod=case.score_mod, block_mask=bm, enable_gqa=gqa))
            print(f"{case.name:18} {shape}: " + "  ".join(
                f"{n} {t:.3f} ms {flops / t / 1e9:.0f} TF/s {res['flex'] / t:.2f}x" for n, t in res.items()),
                flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--time", action="append", default=[], help="B,H,L,D (repeatable)")
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--options", nargs="*", default=["2"],
                    help="pipeline stages of the Gluon backward (one timing each)")
    args = ap.parse_args()
    _record()
    configs.SM90_BWD_ENABLED = True
    if args.check:
        check()
    time_cases(args.time, args.cases, args.options)


if __name__ == "__main__":
    main()
