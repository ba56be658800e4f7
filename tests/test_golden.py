"""Golden snapshots of generated kernels, reviewed as diffs whenever codegen changes.
Refresh with ATTNFORGE_UPDATE_GOLDEN=1 after reading the diff."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import attnforge
from conftest import EXAMPLES

GOLDEN = Path(__file__).parent / "golden"
CASES = [("alibi", "fwd"), ("document", "fwd_sm90"), ("softcap", "bwd_dq"), ("document", "bwd_dkdv"),
         ("rel_bias", "bwd_diag")]


@pytest.mark.parametrize("name,kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_generated_kernel_matches_snapshot(name, kind):
    v = attnforge.compile(str(EXAMPLES / f"{name}.attn"))
    src = v.kernel_source(kind, dtype=torch.bfloat16, head_dim=128)
    src = re.sub(r"# IR hash: \w+", "# IR hash: <hash>", src)
    path = GOLDEN / f"{name}_{kind}.py.txt"
    if os.environ.get("ATTNFORGE_UPDATE_GOLDEN") == "1" or not path.exists():
        path.write_text(src)
    assert src == path.read_text(), f"{path.name} changed: review the diff, then refresh"
