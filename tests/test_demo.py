"""``hierloc demo --quick`` from nothing, then a rerun that reuses every stage."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def test_quick_demo_end_to_end_and_cached_rerun(tmp_path):
    pytest.importorskip("onnxruntime", reason="the demo extracts with efficientnet-lite0-onnx")
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--quick", "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "compare.json").read_text())
    assert set(table) == {"hierloc", "geosurge", "knn", "classify", "regress", "zeroshot"}
    for scores in table.values():
        assert 0 <= scores["geoscore"] <= 5000 and scores["n"] == 80
    report = (out / "report.md").read_text()
    for name in table:
        assert f"| {name} |" in report
    for pic in ("error_cdf.png", "hierloc_error_map.png", "examples.png"):
        assert (out / pic).stat().st_size > 10_000, pic
    assert "→ predicted" in res.output  # example predictions with names
    before = (out / "compare" / "hierloc" / "model" / "manifest.json").stat().st_mtime_ns
    res = runner.invoke(app, ["demo", "--quick", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "building" not in res.output and "extracting" in res.output
    after = (out / "compare" / "hierloc" / "model" / "manifest.json").stat().st_mtime_ns
    assert after == before
