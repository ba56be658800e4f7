"""A different mask per head: the first CAUSAL_HEADS heads are causal, the rest use a 32-token window."""
import torch

import attnforge

CAUSAL_HEADS, WINDOW = 2, 32


def per_head(b, h, q_idx, kv_idx):
    causal = q_idx >= kv_idx
    windowed = causal & (q_idx - kv_idx < WINDOW)
    return torch.where(h < CAUSAL_HEADS, causal, windowed)


score_mod, mask_mod = None, per_head

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(mask_mod=mask_mod))
