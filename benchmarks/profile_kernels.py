"""Per-kernel GPU time of one forward+backward (torch.profiler), attnforge vs torch.compile(flex)."""
from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention
from torch.profiler import ProfilerActivity, profile

import attnforge

B, H, L, D = 2, 8, 4096, 128
v = attnforge.compile("attention causal() { mask = q_idx >= kv_idx }")
q, k, vv = (torch.randn(B, H, L, D, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3))
do = torch.randn_like(q)
flex = torch.compile(flex_attention)
bm = create_block_mask(lambda b, h, i, j: i >= j, B, H, L, L, device="cuda")
for name, fn in (("attnforge", lambda: v(q, k, vv)), ("flex", lambda: flex(q, k, vv, block_mask=bm))):
    for _ in range(5):
        fn().backward(do)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            fn().backward(do)
        torch.cuda.synchronize()
    print(f"== {name}: 10 iterations")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8, max_name_column_width=40))
