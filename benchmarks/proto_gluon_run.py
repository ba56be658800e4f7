"""GPU driver for proto_gluon_fwd: correctness against SDPA in float32 and timings against attnforge's
Triton forward and torch.compile(flex_attention), same process."""
import sys
import torch
import triton
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

import attnforge
from attnforge.runtime import launch, ops
from attnforge.bench import _time

sys.path.insert(0, "benchmarks")
import proto_gluon_fwd as G  # noqa: E402

CAUSAL = attnforge.compile(mask_mod=lambda b, h, q, k: q >= k)
FULL = attnforge.compile("attention full() { }")


def gluon_fwd(variant, q, k, v, causal, bm_, bn, stages, nw, fn="attn_fwd", **opts):
    kern, named, bm = ops._prepare(variant._key, q, k, v, [])
    B, H, Lq, D = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(B, H, Lq, dtype=torch.float32, device=q.device)
    call = launch.fwd_call(kern, q, k, v, out, lse, named, D ** -0.5, bm,
                           launch.TileConfig(bm_, bn, nw, stages))
    consts = {n: c for n, c in call.constexprs.items() if n not in ("USE_TMA", "PRECISION", "DOT")}
    launch._ensure_allocator()
    grid = (triton.cdiv(Lq, bm_), B * H)
    getattr(G, fn)[grid](*call.args, **consts, STAGES=stages, CAUSAL=causal, num_warps=nw, **opts)
    return out, lse


def check():
    torch.manual_seed(0)
    for (B, H, Lq, Lk, D), causal in [((2, 3, 1000, 1000, 128), True), ((2, 3, 777, 1000, 128), False),
                                      ((1, 2, 300, 300, 64), True), ((2, 2, 2048, 2048, 128), True)]:
        q = torch.randn(B, H, Lq, D, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(B, H, Lk, D, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(B, H, Lk, D, device="cuda", dtype=torch.bfloat16)
        gold = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
        for cfg in [(128, 128, 3, 4, "attn_fwd_ws2"), (128, 64, 3, 4, "attn_fwd_ws2")]:
            out, lse = gluon_fwd(CAUSAL if causal else FULL, q, k, v, causal, *cfg, CONSUMER_REGS=240)
            glse = torch.logsumexp((q.float() @ k.float().transpose(-1, -2)) * D ** -0.5 + (
                torch.triu(torch.full((Lq, Lk), float("-inf"), device="cuda"), 1) if causal else 0), -1)
            print("  lse err", (lse - glse).abs().max().item())
            err = (out.float() - gold).abs().max().item()
            lim = 2 * (ref.float() - gold).abs().max().item() + 1e-3
            print(f"check {B},{H},{Lq},{Lk},{D} causal={causal} cfg={cfg}: err {err:.2e} lim {lim:.2e}",
                  "OK" if err <= lim else "FAIL", flush=True)


def bench():
    for B, H, L, D in [(16, 16, 2048, 128), (4, 16, 8192, 128)]:
        q, k, v = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        for name, causal in (("causal", True), ("full", False)):
            variant = CAUSAL if causal else FULL
            flops = 4 * B * H * L * L * D * (0.5 if causal else 1.0)
            mask = (lambda b, h, qi, ki: qi >= ki) if causal else (lambda b, h, qi, ki: qi >= 0)
            blk = create_block_mask(mask, B, H, L, L, device="cuda")
            flex = torch.compile(flex_attention)
            res = {"flex": _time(lambda: flex(q, k, v, block_mask=blk), True),
                   "triton": _time(lambda: variant(q, k, v), True)}
            for cfg, opts in [((128, 128, 3, 8, "attn_fwd_ws"), {}),
                              ((128, 128, 3, 4, "attn_fwd_ws2"), dict(CONSUMER_REGS=240)),
                              ((128, 128, 3, 4, "attn_fwd_ws2"), dict(CONSUMER_REGS=232)),
                              ((128, 64, 3, 4, "attn_fwd_ws2"), dict(CONSUMER_REGS=240)),
                              ((128, 64, 4, 4, "attn_fwd_ws2"), dict(CONSUMER_REGS=240))]:
                try:
                    t = _time(lambda: gluon_fwd(variant, q, k, v, causal, *cfg, **opts), True)
                    res[str(cfg) + str(opts.get("CONSUMER_REGS", ""))] = t
                    print(f"  {name} {B},{H},{L},{D} {cfg} {opts}: {t:.3f} ms", flush=True)
                except Exception as e:  # noqa: BLE001
                    print("fail", cfg, type(e).__name__, str(e)[:300], flush=True)
            line = "  ".join(f"{n}: {t:.3f} ms {flops / t / 1e9:.0f} TF/s ({res['flex'] / t:.2f}x)"
                             for n, t in res.items())
            print(f"{name} {B},{H},{L},{D}: {line}", flush=True)


if __name__ == "__main__":
    if "--check" in sys.argv:
        check()
    bench()
