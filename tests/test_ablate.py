"""``hierloc ablate`` on the toy data: the rows of the chosen tables, flat search = each
level's nearest entity, reuse of finished variants."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from hierloc.cli import app
from tests.test_predict import trained  # noqa: F401 (fixture)

runner = CliRunner()
TINY = [
    "model.dim=16",
    "model.hidden=32",
    "model.heads=4",
    "optim.batch_size=32",
    "optim.max_steps=3",
]


def test_ablate_tables_8_and_13(trained, tmp_path):  # noqa: F811
    args = [
        "ablate",
        "--hierarchy",
        str(trained / "h"),
        "--features",
        str(trained / "store"),
        "--data",
        str(trained / "train.parquet"),
        "-o",
        str(tmp_path / "abl"),
        "--tables",
        "8,13",
    ]
    for s in TINY:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["label"] for r in results["8"]] == [
        "Flat per-level (no hierarchy)",
        "Hierarchical (beam=1)",
        "Hierarchical (beam=10)",
    ]
    assert [r["label"] for r in results["13"]] == [f"λ = {v}" for v in (0.0, 0.5, 1.0, 2.0)]
    assert sorted(p.name for p in (tmp_path / "abl" / "runs").iterdir()) == [
        "base",
        "lam0.0",
        "lam0.5",
        "lam2.0",
    ]  # the base config trained once for both tables
    cfg = (tmp_path / "abl" / "runs" / "lam0.5" / "run" / "config.yaml").read_text()
    assert "lam: 0.5" in cfg
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "## Table 8" in md and "## Table 13" in md and "Paper's best" in md
    # flat search: the city is the nearest city entity, whatever its parents
    from hierloc.locate.hierloc import Geolocator
    from hierloc.train.data import load_training_data

    geo = Geolocator.load(tmp_path / "abl" / "runs" / "base" / "model")
    preds = pd.read_parquet(tmp_path / "abl" / "evals" / "base-flat" / "predictions.parquet")
    data = load_training_data(trained / "h", trained / "store")
    z = geo.embed(data.train.features.numpy()).double()
    D = geo.index.manifold.pairwise_dist(z, geo.index.points[3].double(), squared=True)
    nearest = data.entity_ids[3][D.argmin(dim=1).numpy()]
    assert np.array_equal(preds["city_id"].to_numpy(dtype=object), nearest)
    # a rerun reuses every variant and evaluation
    stamp = (tmp_path / "abl" / "runs" / "lam2.0" / "model" / "manifest.json").stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    again = (tmp_path / "abl" / "runs" / "lam2.0" / "model" / "manifest.json").stat().st_mtime_ns
    assert again == stamp


def test_table_10_removes_mean_embeddings_coarse_to_fine():
    """The paper's Table 10 rows: none, then country, country & region, … all four removed."""
    from hierloc.workflows.ablate import parse_tables, rows

    assert parse_tables("10") == [10]
    got = [(r.label, r.overrides) for r in rows() if r.table == 10]
    assert got == [
        ("None removed", ()),
        ("Country", ("model.drop_image_mean_levels=[0]",)),
        ("Country & Region", ("model.drop_image_mean_levels=[0,1]",)),
        ("Country & Region & Sub-region", ("model.drop_image_mean_levels=[0,1,2]",)),
        ("Country & Region & Sub-region & City", ("model.drop_image_mean_levels=[0,1,2,3]",)),
    ]
