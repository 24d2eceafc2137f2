"""``hierloc demo --quick`` from nothing, then a rerun that reuses every stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def majority_geoscore(data) -> float:
    """The majority-class predictor: every test image answered with the mean location of the
    most frequent training country; GeoScore by the paper's formula 5000·exp(−km/1492.7)."""
    train, test = pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "test.parquet")
    top = train["country"].value_counts().idxmax()
    sub = train[train["country"] == top]
    lat0, lon0 = sub["latitude"].mean(), sub["longitude"].mean()
    p1, p2 = np.radians(test["latitude"].to_numpy()), np.radians(lat0)
    dl = np.radians(test["longitude"].to_numpy() - lon0)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    km = 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))
    return float(np.mean(5000 * np.exp(-km / 1492.7)))


def stamps(out) -> dict:
    """Every stage stamp and model manifest of a demo folder, with its modification time."""
    files = [*out.rglob("stage.json"), *out.glob("compare/*/model/manifest.json")]
    return {str(f.relative_to(out)): f.stat().st_mtime_ns for f in files}


def test_quick_demo_end_to_end_and_cached_rerun(tmp_path):
    out = tmp_path / "demo"
    res = runner.invoke(app, ["demo", "--quick", "-o", str(out)])
    assert res.exit_code == 0, res.output
    table = json.loads((out / "compare.json").read_text())
    assert set(table) == {"hierloc", "geosurge", "knn", "classify", "regress", "zeroshot", "prior"}
    floor = majority_geoscore(out / "data")
    for name, scores in table.items():
        assert scores["n"] == 80
        if name not in ("regress", "prior"):  # regression is weak by design; prior by definition
            assert scores["geoscore"] > floor + 100, (name, scores["geoscore"], floor)
    report = (out / "report.md").read_text()
    for name in table:
        assert f"| {name} |" in report
    for pic in ("error_cdf.png", "hierloc_error_map.png", "examples.png"):
        assert (out / pic).stat().st_size > 10_000, pic
    assert "→ predicted" in res.output  # example predictions with names
    before = stamps(out)
    assert len(before) >= 12  # data, hierarchy, cells, each model's run/model/eval
    res = runner.invoke(app, ["demo", "--quick", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert stamps(out) == before  # no stage was recomputed
