"""Tanh soft-capping of the logits (Gemma 2, Grok-1) with a causal mask."""
import torch

import attnforge

SOFT_CAP = 30.0


def softcap(score, b, h, q_idx, kv_idx):
    return SOFT_CAP * torch.tanh(score / SOFT_CAP)


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


score_mod, mask_mod = softcap, causal

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(score_mod=score_mod, mask_mod=mask_mod))
