"""Document masking for packed sequences: a captured int tensor of document ids, plus causality."""
import torch

import attnforge

LENGTHS = [100, 60, 96]  # three packed documents, 256 tokens
document_id = torch.repeat_interleave(torch.arange(len(LENGTHS), dtype=torch.int32),
                                      torch.tensor(LENGTHS))


def document_causal(b, h, q_idx, kv_idx):
    same_doc = document_id[q_idx] == document_id[kv_idx]
    return same_doc & (q_idx >= kv_idx)


score_mod, mask_mod = None, document_causal

if __name__ == "__main__":
    from _demo import run

    run(attnforge.compile(mask_mod=mask_mod))
