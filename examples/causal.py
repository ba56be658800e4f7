"""Causal masking: each query attends to itself and earlier keys. The smallest mask_mod."""
import attnforge


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


score_mod, mask_mod = None, causal

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(mask_mod=mask_mod))
