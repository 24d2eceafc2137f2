"""``hierloc demo --quick`` from nothing, then a rerun that reuses every stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def _km(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dl = np.radians(np.asarray(lon2) - np.asarray(lon1))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def medoid_geoscore(data) -> float:
    """The prior, computed here by brute force: every test image answered with the training
    location of least summed great-circle distance to the others; GeoScore by the paper's
    formula 5000·exp(−km/1492.7)."""
    train, test = pd.read_parquet(data / "train.parquet"), pd.read_parquet(data / "test.parquet")
    lat, lon = train["latitude"].to_numpy(), train["longitude"].to_numpy()
    total = [_km(lat[i], lon[i], lat, lon).sum() for i in range(len(lat))]
    m = int(np.argmin(total))
    km = _km(test["latitude"].to_numpy(), test["longitude"].to_numpy(), lat[m], lon[m])
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
    for name, scores in table.items():
        assert scores["n"] == 80 and 0 < scores["geoscore"] < 5000, name
    # the prior row is the medoid answer, scored end to end through compare
    assert table["prior"]["geoscore"] == pytest.approx(medoid_geoscore(out / "data"), rel=1e-6)
    assert len({round(s["geoscore"], 3) for s in table.values()}) == len(table)
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
