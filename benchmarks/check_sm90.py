"""GPU check of the sm_90 Gluon forward through attnforge's API: every example variant (and odd
shapes: L not a multiple of 128, Lq != Lk, GQA, D=72, fully masked rows) against the float64
reference with flex's rule, and which kernel ran."""
import glob
import os

import torch

import attnforge
from attnforge.runtime import ops


def main():
    torch.manual_seed(0)
    for path in sorted(glob.glob("examples/*.attn")):
        name = os.path.basename(path)[:-5]
        v = attnforge.compile(path, **({"MAX_LEN": 1024} if name == "rel_bias" else {}))
        for B, Hq, Hk, Lq, Lk, D in [(2, 4, 4, 1000, 1000, 128), (1, 4, 2, 333, 520, 128), (2, 2, 2, 300, 300, 72)]:
            q = torch.randn(B, Hq, Lq, D, device="cuda", dtype=torch.bfloat16)
            k = torch.randn(B, Hk, Lk, D, device="cuda", dtype=torch.bfloat16)
            vv = torch.randn(B, Hk, Lk, D, device="cuda", dtype=torch.bfloat16)
            if name == "document" and Lq != Lk:
                continue

            def dims(shape):
                return [s if isinstance(s, int) else Hq if s == "H" else Lq if s == "L" else 2047 for s in shape]

            tensors = {p.name: torch.randn(*dims(p.shape), device="cuda") * 0.1 if p.dtype.startswith("f")
                       else torch.randint(0, 3, dims(p.shape), device="cuda").sort().values.to(torch.int32)
                       for p in v.lowered.params}
            try:
                out, lse = v(q, k, vv, return_lse=True, enable_gqa=Hq != Hk, **tensors)
                gold, glse = v.reference(q.double(), k.double(), vv.double(), return_lse=True,
                                         enable_gqa=Hq != Hk, **tensors)
                low, llse = v.reference(q, k, vv, return_lse=True, enable_gqa=Hq != Hk, **tensors)
            except Exception as e:  # noqa: BLE001
                print(f"{name:16} {B},{Hq},{Hk},{Lq},{Lk},{D}: {type(e).__name__}: {str(e)[:200]}")
                continue
            err = (out.double() - gold).abs().max().item()
            lim = 2 * (low.double() - gold).abs().max().item() + 1e-3
            fin = torch.isfinite(glse)
            lerr = (lse.double() - glse)[fin].abs().max().item() if fin.any() else 0.0
            ninf = bool(((lse == float("-inf")) == ~fin).all())
            kern = [kk for (key, spec, dev), kk in ops._KERNELS.items() if key == v._key]
            print(f"{name:16} {B},{Hq},{Hk},{Lq},{Lk},{D}: sm90={[kk.sm90 for kk in kern]} err {err:.2e} "
                  f"lim {lim:.2e} lse {lerr:.1e} -inf rows ok {ninf} nan {bool(out.isnan().any())} "
                  f"{'OK' if err <= lim and ninf and lerr < 1e-2 else 'FAIL'}", flush=True)


if __name__ == "__main__":
    main()
