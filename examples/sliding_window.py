"""Sliding-window causal attention built by composing two mask_mods with `and_masks`."""
import attnforge

WINDOW = 64


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def window(b, h, q_idx, kv_idx):
    return q_idx - kv_idx < WINDOW


score_mod, mask_mod = None, attnforge.and_masks(causal, window)

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(mask_mod=mask_mod))
