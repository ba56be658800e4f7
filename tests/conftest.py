"""Shared fixtures: deterministic hypothesis profile, example loading, the three-run comparison rule."""
from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
EXAMPLE_NAMES = ["causal", "sliding_window", "prefix_lm", "document", "alibi", "softcap",
                 "rel_bias", "per_head"]

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
warnings.filterwarnings("ignore", message=".*return_lse is deprecated.*")


def load_example(name: str):
    """Import examples/NAME.py as a module (its captured tensors are module globals)."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # flex's tracing imports a function's module by name
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(params=EXAMPLE_NAMES)
def example(request):
    return request.param, load_example(request.param)


def assert_close_rule(name: str, out, gold, lowp, atol: float = 1e-6) -> None:
    """max|out - gold| <= 2 * max|eager_lowp - gold| + atol (PyTorch flex tests' rule)."""
    fin = torch.isfinite(gold)
    assert torch.equal(fin, torch.isfinite(out)), f"{name}: infinities differ"
    err = (out.double() - gold.double())[fin].abs().max().item() if fin.any() else 0.0
    ref = (lowp.double() - gold.double())[fin].abs().max().item() if fin.any() else 0.0
    assert err <= 2 * ref + atol, f"{name}: error {err:.3e} > 2 * {ref:.3e} + {atol:.0e}"
