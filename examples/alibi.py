"""ALiBi: a per-head linear distance penalty as a score_mod, with a causal mask."""
import torch

import attnforge

NUM_HEADS = 4


def alibi(score, b, h, q_idx, kv_idx):
    slope = torch.exp2(-((h + 1) * 8.0 / NUM_HEADS))
    return score + (kv_idx - q_idx) * slope


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


score_mod, mask_mod = alibi, causal

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(score_mod=score_mod, mask_mod=mask_mod))
