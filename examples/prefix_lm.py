"""Prefix-LM: bidirectional attention inside a prefix, causal after it (`or_masks`)."""
import attnforge

PREFIX = 48


def prefix(b, h, q_idx, kv_idx):
    return kv_idx < PREFIX


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


score_mod, mask_mod = None, attnforge.or_masks(prefix, causal)

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(mask_mod=mask_mod))
