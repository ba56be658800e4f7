"""Does Triton warp-specialize a flash-attention loop for Hopper? Compiles a minimal forward loop
(K/V tiles from host-side tensor descriptors, tile index affine in the loop counter) for sm_90
without a GPU and reports whether the TTGIR holds a `ttg.warp_specialize` op.

    TRITON_INTERPRET=0 python benchmarks/ws_probe.py          # 4 and 8 warps, 64- and 128-row tiles
"""
from __future__ import annotations

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource


@triton.jit
def probe(desc_k, desc_v, Q, O, n_tiles, qk_scale, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
          D: tl.constexpr):
    o_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, D)
    b_q = tl.load(Q + o_m[:, None] * D + o_d[None, :])
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D], tl.float32)
    for j in tl.range(0, n_tiles, warp_specialize=True):
        b_k = desc_k.load([j * BLOCK_N, 0])
        z2 = tl.dot(b_q, tl.trans(b_k)) * qk_scale
        m_new = tl.maximum(m_i, tl.max(z2, 1))
        b_p = tl.exp2(z2 - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(b_p, 1)
        b_v = desc_v.load([j * BLOCK_N, 0])
        acc = tl.dot(b_p.to(b_v.dtype), b_v, acc * alpha[:, None])
        m_i = m_new
    tl.store(O + o_m[:, None] * D + o_d[None, :], (acc / l_i[:, None]).to(O.dtype.element_ty))


def main():
    D = 128
    print(f"triton {triton.__version__}, target sm_90")
    for block_m, warps in ((64, 4), (128, 4), (128, 8)):
        block_n = 64
        sig = {"desc_k": f"tensordesc<bf16[{block_n}, {D}]>", "desc_v": f"tensordesc<bf16[{block_n}, {D}]>",
               "Q": "*bf16", "O": "*bf16", "n_tiles": "i32", "qk_scale": "fp32",
               "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "D": "constexpr"}
        consts = {"BLOCK_M": block_m, "BLOCK_N": block_n, "D": D}
        try:
            k = triton.compile(ASTSource(probe, sig, consts), target=GPUTarget("cuda", 90, 32),
                               options={"num_warps": warps, "num_stages": 2})
            ws = k.asm["ttgir"].count("ttg.warp_specialize")
            print(f"{block_m}x{block_n} w{warps}: compiled, {ws} warp_specialize ops, "
                  f"{k.metadata.num_warps} warps")
        except Exception as err:  # noqa: BLE001 - the finding is which configurations fail
            print(f"{block_m}x{block_n} w{warps}: {type(err).__name__}: {str(err).splitlines()[0][:120]}")


if __name__ == "__main__":
    main()
