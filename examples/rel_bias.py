"""A learnable relative-position bias table (one row per head) read by a score_mod; it gets gradients."""
import torch

import attnforge

NUM_HEADS, MAX_LEN = 4, 256
rel_bias = torch.zeros(NUM_HEADS, 2 * MAX_LEN - 1).normal_(0, 0.5).requires_grad_()


def relative_bias(score, b, h, q_idx, kv_idx):
    return score + rel_bias[h, q_idx - kv_idx + (MAX_LEN - 1)]


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


score_mod, mask_mod = relative_bias, causal

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(score_mod=score_mod, mask_mod=mask_mod))
