"""``hierloc ablate`` on the toy data: the rows of the chosen tables, flat search = each
level's nearest entity, reuse of finished variants."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()
TINY = [
    "model.dim=16",
    "model.hidden=32",
    "model.heads=4",
    "optim.batch_size=32",
    "optim.max_steps=3",
]


def test_ablate_tables_8_and_13(trained, tmp_path):
    """Tables 8 and 13, a rerun that reuses everything, then the base config with 2 seeds."""
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
    # --seeds 0,1: seed 0 reuses the base run, seed 1 trains its own folder with its seed (the
    # λ variants keep one seed); a row is the mean of its per-seed evaluations with their std
    out = tmp_path / "abl"
    seeded = [a if a != "8,13" else "8" for a in args] + ["--seeds", "0,1"]
    res = runner.invoke(app, seeded)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "base",
        "base-seed1",
        "lam0.0",
        "lam0.5",
        "lam2.0",
    ]
    assert "seed: 1" in (out / "runs" / "base-seed1" / "run" / "config.yaml").read_text()
    import torch
    from safetensors.torch import load_file

    w0, w1 = (
        load_file(out / "runs" / r / "model" / "query.safetensors") for r in ("base", "base-seed1")
    )
    assert not torch.equal(w0["image_out.weight"], w1["image_out.weight"])
    row = json.loads((out / "ablation.json").read_text())["8"][2]  # beam 10
    a, b = (
        json.loads((out / "evals" / tag / "metrics.json").read_text())["entity"]
        for tag in ("base-beam10", "base-seed1-beam10")
    )
    assert row["n_seeds"] == 2 and row["seed_geoscores"] == [a["geoscore"], b["geoscore"]]
    assert row["geoscore"] == pytest.approx((a["geoscore"] + b["geoscore"]) / 2)
    assert row["median_km"] == pytest.approx((a["median_km"] + b["median_km"]) / 2)
    assert row["geoscore_std"] == pytest.approx(abs(a["geoscore"] - b["geoscore"]) / 2**0.5)
    assert "(2 seeds)" in (out / "ablation.md").read_text()


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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "0,x"], "--seeds: '0,x' is not a comma-separated list"),
        (["--seeds", "1,1"], "--seeds: '1,1' repeats a seed"),
        (["--seeds", "0,1", "--set", "run.seed=3"], "--set run.seed=… and --seeds"),
    ],
)
def test_ablate_rejects_bad_seeds_before_any_work(tmp_path, extra, message):
    out = tmp_path / "abl"
    res = runner.invoke(
        app,
        ["ablate", "--hierarchy", str(tmp_path), "--features", str(tmp_path)]
        + ["--data", str(tmp_path / "x.parquet"), "-o", str(out), *extra],
    )
    assert res.exit_code == 2, res.output
    assert message in " ".join(res.output.split())
    assert not out.exists()


def _row(label, geoscore, std=None, paper=False):
    return {"label": label, "geoscore": geoscore, "geoscore_std": std, "paper_best": paper}


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # the paper's best leads by 50, the spread is 50: not beyond it
        ([_row("A", 2500, 50, True), _row("B", 2450)], "within the seed spread (50): not called"),
        ([_row("A", 2600, 50, True), _row("B", 2450)], "ordering holds: 150 ahead of B"),
        ([_row("A", 2400, 30, True), _row("B", 2600)], "does not hold: 200 ahead"),
        ([_row("A", 2400, 30, True), _row("B", 2420, 10)], "20 ahead of the paper's best, within"),
        ([_row("A", 2400, None, True), _row("B", 2420)], "one seed, so a direction"),
    ],
)
def test_verdict_calls_an_ordering_only_beyond_the_seed_spread(rows, expected):
    from hierloc.workflows.ablate import verdict

    assert expected in verdict(rows)


@pytest.mark.parametrize(
    ("gap", "spread", "expected"),
    [
        (-60, 50, "-60: held"),  # the paper's best ahead by more than the spread
        (-50, 50, "-50: unresolved"),  # exactly the spread: not beyond it
        (40, 50, "+40: unresolved"),
        (51, 50, "+51: not held"),
        (-300, None, "-300 (one seed)"),  # no spread to call by
    ],
)
def test_each_row_is_called_against_the_paper_best_beyond_the_seed_spread(gap, spread, expected):
    from hierloc.workflows.ablate import call

    paper = _row("P", 2000, spread, True)
    assert call(_row("R", 2000 + gap), paper, spread) == expected


def test_render_calls_every_row_with_the_table_spread():
    """The spread used for every row is the table's largest standard deviation (here the
    second row's 70, not the paper's best's 20): a row 60 behind is unresolved."""
    from hierloc.workflows.ablate import render

    def full(label, gs, std, paper, n):
        return {
            **_row(label, gs, std, paper),
            "n_seeds": n,
            "mean_km": 1.0,
            "median_km": 1.0,
        }

    rs = [
        full("P", 2000, 20, True, 3),
        full("Q", 1800, 70, False, 3),
        full("S", 1940, None, False, 1),
    ]
    md = render({7: rs}, [], seeds=[0, 1, 2])
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| -200: held |" in lines["| Q"]
    assert "| -60: unresolved |" in lines["| S"]
    assert "| — |" in lines["| P (paper's best)"]
