"""The benchmark's report (no GPU needed): target checks, the table, and `attnforge bench --from-json`."""
from __future__ import annotations

import json

from attnforge import bench, cli


def _row(case, impl, fwd, bwd, shape=(16, 16, 2048, 128)):
    return {"case": case, "shape": list(shape), "impl": impl, "fwd_ms": fwd, "bwd_ms": bwd,
            "fwd_tflops": 1.0, "bwd_tflops": 1.0, "first_call_s": 0.5, "peak_extra_mib": 10.0}


ROWS = [_row("causal", "attnforge", 1.0, 2.0), _row("causal", "flex", 1.2, 2.0),
        _row("causal", "sdpa_cudnn", 0.8, 1.5), _row("softcap30_causal", "attnforge", 1.0, 1.0),
        _row("softcap30_causal", "flex", 1.6, 1.4), _row("rel_bias_causal", "attnforge", 1.0, 1.0)]
COMPILES = [{"variant": "causal", "phase": "cold", "fwd_s": 1.5, "bwd_s": 1.0, "recompiles": 0},
            {"variant": "causal", "phase": "warm", "fwd_s": 0.2, "bwd_s": 0.01, "recompiles": 1,
             "next_fwd_s": 0.03, "import_to_call_s": 0.15}]


def test_targets_are_checked_against_the_same_run():
    lines = bench.check_targets(ROWS, COMPILES, 1.2)
    text = "\n".join(lines)
    assert "met    fwd >= 1.15x flex          causal 16,16,2048,128: 1.20x" in text
    assert "MISSED bwd >= 1.15x flex          causal 16,16,2048,128: 1.00x" in text
    assert "met    softcap fwd >= 1.5x flex   softcap30_causal 16,16,2048,128: 1.60x" in text
    assert "MISSED softcap bwd >= 1.5x flex   softcap30_causal 16,16,2048,128: 1.40x" in text
    assert "MISSED fwd >= 0.85x cuDNN         causal 16,16,2048,128: 0.80x" in text
    assert "flex cannot run it" in text  # rel_bias has no flex row
    assert any(line.startswith("met    compile+first call cold") for line in lines)
    assert any(line.startswith("MISSED compile+first call warm") for line in lines)
    assert any(line.startswith("MISSED zero recompiles") for line in lines)
    assert "met    a new variant in a running process, warm < 0.05 s  causal: 0.030 s" in text
    assert "0.15 s after import" in text and "running process, cold" not in text  # no next_fwd_s there
    assert lines[-1].startswith("met    block metadata")
    # a miss that two decimals would round up to the target shows three
    close = [_row("causal", "attnforge", 1.0, 1.0), _row("causal", "flex", 1.146, 1.0)]
    assert "MISSED fwd >= 1.15x flex          causal 16,16,2048,128: 1.146x" in bench.check_targets(close, [], None)


def test_table_has_ratios_from_the_same_shape():
    table = bench.table(ROWS)
    causal = next(line for line in table.splitlines() if line.startswith("| causal | 16,16,2048,128 | attnforge"))
    assert "| 1.20 | 1.00 | 0.80 |" in causal


def test_report_from_saved_rows(tmp_path, capsys):
    saved = tmp_path / "rows.json"
    saved.write_text(json.dumps({"head": "test run", "rows": ROWS, "compiles": COMPILES, "metadata_ms": 1.2}))
    assert cli.main(["bench", "--from-json", str(saved), "--chart", str(tmp_path / "chart.png")]) == 0
    out = capsys.readouterr().out
    assert "test run" in out and "MISSED fwd >= 0.85x cuDNN" in out
    assert (tmp_path / "chart.png").exists() or "matplotlib is not installed" in out
