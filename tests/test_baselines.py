"""Baselines against brute force, ``hierloc evaluate`` wiring, and ``hierloc compare``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.geo.haversine import haversine_km, unit_vectors
from hierloc.hierarchy.io import load_entities
from hierloc.locate.baselines import BaselineLocator
from hierloc.train.data import load_training_data
from hierloc.train.families import fit_model

runner = CliRunner()


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def data(trained):
    return load_training_data(trained / "h", trained / "store")


def test_knn_returns_the_nearest_training_image(trained, data, tmp_path):
    folder = fit_model("knn", trained / "h", trained / "store", tmp_path / "knn")
    knn = BaselineLocator.load(folder)
    rng = np.random.default_rng(3)
    q = rng.normal(size=(25, data.image_dim)).astype(np.float32)
    gallery = _unit(data.train.features.numpy().astype(np.float16).astype(np.float32))
    want = (_unit(q) @ gallery.T).argmax(1)
    preds = knn.predict_features(q, top_k=3)
    city_ids = data.entity_ids[-1]
    for b, p in enumerate(preds):
        assert len(p.answers) == 3
        lat, lon = data.train.coords[want[b]].tolist()
        assert (p.best.latitude, p.best.longitude) == pytest.approx((lat, lon))
        assert p.best.places[-1].entity_id == city_ids[int(data.train.targets[want[b], -1])]
        assert p.best.places[0].entity_id == data.entity_ids[0][int(data.train.targets[want[b], 0])]


def test_zeroshot_is_the_nearest_city_mean_embedding(trained, data, tmp_path):
    folder = fit_model("zeroshot", trained / "h", trained / "store", tmp_path / "z")
    tables, ids, _ = load_entities(trained / "h")
    q = data.train.features[:30].numpy()
    means = _unit(
        np.asarray(tables.image_mean[-1], np.float32).astype(np.float16).astype(np.float32)
    )
    want = (_unit(q) @ means.T).argmax(1)
    preds = BaselineLocator.load(folder).predict_features(q, top_k=1)
    assert [p.best.places[-1].entity_id for p in preds] == [ids[-1][w] for w in want]
    coords = np.array(tables.coords[-1])[want]
    assert np.allclose([[p.best.latitude, p.best.longitude] for p in preds], coords)


def test_regress_names_the_city_nearest_to_its_coordinates(trained, data, tmp_path):
    folder = fit_model(
        "regress", trained / "h", trained / "store", tmp_path / "r", ["epochs=20", "lr=3e-3"]
    )
    preds = BaselineLocator.load(folder).predict_features(data.train.features.numpy(), top_k=1)
    tables, ids, _ = load_entities(trained / "h")
    cities = np.array(tables.coords[-1])
    lat = np.array([p.best.latitude for p in preds])
    lon = np.array([p.best.longitude for p in preds])
    for b in range(0, len(preds), 37):
        nearest = haversine_km(lat[b], lon[b], cities[:, 0], cities[:, 1]).argmin()
        assert preds[b].best.places[-1].entity_id == ids[-1][nearest]
    # it learned something: closer to the truth than the mean location is
    err = haversine_km(lat, lon, data.train.coords[:, 0].numpy(), data.train.coords[:, 1].numpy())
    lat_t, lon_t = data.train.coords[:, 0].numpy(), data.train.coords[:, 1].numpy()
    c = _unit(unit_vectors(lat_t, lon_t).mean(0, keepdims=True))[0]
    clat, clon = np.rad2deg(np.arcsin(c[2])), np.rad2deg(np.arctan2(c[1], c[0]))
    base = haversine_km(
        clat, clon, data.train.coords[:, 0].numpy(), data.train.coords[:, 1].numpy()
    )
    assert np.median(err) < np.median(base)


def test_classify_beats_the_majority_city_on_training_images(trained, data, tmp_path):
    folder = fit_model(
        "classify",
        trained / "h",
        trained / "store",
        tmp_path / "c",
        ["epochs=40", "lr=3e-3", "dropout=0.0"],
    )
    clf = BaselineLocator.load(folder)
    preds = clf.predict_features(data.train.features.numpy(), top_k=2)
    got = np.array([p.best.places[-1].entity_id for p in preds], dtype=object)
    truth = data.entity_ids[-1][data.train.targets[:, -1].numpy()]
    majority = pd.Series(truth).value_counts(normalize=True).iloc[0]
    assert (got == truth).mean() > majority + 0.1
    confs = [a.confidence for a in preds[0].answers]
    assert 0 < confs[1] <= confs[0] <= 1
    with torch.no_grad():  # the folder's answer is the MLP's argmax
        logits = clf._model(data.train.features[:5])
    assert [p.best.places[-1].entity_id for p in preds[:5]] == [
        data.entity_ids[-1][i] for i in logits.argmax(1).tolist()
    ]


def test_evaluate_and_compare_end_to_end(trained, tmp_path):
    args = [
        "compare",
        "--hierarchy",
        str(trained / "h"),
        "--features",
        str(trained / "store"),
        "--data",
        str(trained / "train.parquet"),
        "-o",
        str(tmp_path / "cmp"),
        "--models",
        "hierloc,knn,zeroshot",
        "--set",
        "model.dim=16",
        "--set",
        "model.hidden=32",
        "--set",
        "model.heads=4",
        "--set",
        "optim.batch_size=32",
        "--set",
        "optim.max_steps=3",
        "-f",
        "json",
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout[res.stdout.index("{") :])
    assert set(table) == {"hierloc", "knn", "zeroshot"}
    assert {"geoscore", "mean_km", "median_km", "acc_country", "acc_city", "acc_25km"} <= set(
        table["knn"]
    )
    # knn on its own training images: every answer is the image itself
    assert table["knn"]["median_km"] == pytest.approx(0.0, abs=1e-6)
    assert table["knn"]["acc_city"] == 1.0
    # the metrics are those of the written predictions (GeoScore's formula)
    preds = pd.read_parquet(tmp_path / "cmp" / "zeroshot" / "eval" / "predictions.parquet")
    gs = float(np.mean(5000 * np.exp(-preds["error_km"].to_numpy() / 1492.7)))
    assert table["zeroshot"]["geoscore"] == pytest.approx(gs, rel=1e-9)
    for f in ("compare.md", "compare.json", "compare_osv5m.json", "error_cdf.png"):
        assert (tmp_path / "cmp" / f).exists(), f
    ev = tmp_path / "cmp" / "hierloc" / "eval"
    for f in ("metrics.json", "predictions.parquet", "report.md", "error_cdf.png", "error_map.png"):
        assert (ev / f).exists(), f
    # a rerun reuses every stage
    stamp = (tmp_path / "cmp" / "hierloc" / "model" / "manifest.json").stat().st_mtime_ns
    res = runner.invoke(app, args)
    assert res.exit_code == 0
    assert (tmp_path / "cmp" / "hierloc" / "model" / "manifest.json").stat().st_mtime_ns == stamp


def test_compare_recomputes_exactly_what_changed(trained, tmp_path):
    """A changed baseline option retrains and re-evaluates that model only; a changed data
    split re-evaluates every model without retraining any; changed weights under the same
    manifest re-evaluate that model; an unchanged rerun touches nothing."""
    from hierloc.workflows.compare import compare

    def run(data, temperature):
        compare(
            ["knn", "zeroshot"],
            trained / "h",
            trained / "store",
            data,
            tmp_path / "cmp",
            overrides={"knn": [f"temperature={temperature}"], "zeroshot": []},
        )

    def times():
        return {
            f"{m}/{s}": (tmp_path / "cmp" / m / s / "stage.json").stat().st_mtime_ns
            for m in ("knn", "zeroshot")
            for s in ("model", "eval")
        }

    half = tmp_path / "half.parquet"
    pd.read_parquet(trained / "train.parquet").iloc[::2].to_parquet(half)
    run(trained / "train.parquet", 0.05)
    first = times()
    run(trained / "train.parquet", 0.05)
    assert times() == first
    run(trained / "train.parquet", 0.1)
    second = times()
    changed = {k for k in first if first[k] != second[k]}
    assert changed == {"knn/model", "knn/eval"}
    run(half, 0.1)
    third = times()
    changed = {k for k in second if second[k] != third[k]}
    assert changed == {"knn/eval", "zeroshot/eval"}
    # a model folder whose weights change under the same manifest (a model retrained in
    # place) is evaluated again, not answered from the old model's metrics
    gallery = tmp_path / "cmp" / "knn" / "model" / "gallery.npy"
    np.save(gallery, np.load(gallery)[::-1].copy())
    run(half, 0.1)
    fourth = times()
    changed = {k for k in third if third[k] != fourth[k]}
    assert changed == {"knn/eval"}


def test_prior_answers_the_training_medoid_for_every_image(trained, data, tmp_path):
    """The prior ignores the image: one answer, the training location with the least summed
    great-circle distance to the others (brute force over every pair), its city, confidence
    the city's share of the training images."""
    folder = fit_model("prior", trained / "h", trained / "store", tmp_path / "p")
    coords = data.train.coords.numpy().astype(np.float64)
    n = len(coords)
    total = [
        sum(haversine_km(coords[i, 0], coords[i, 1], coords[j, 0], coords[j, 1]) for j in range(n))
        for i in range(n)
    ]
    medoid = int(np.argmin(total))
    rng = np.random.default_rng(0)
    preds = BaselineLocator.load(folder).predict_features(
        rng.normal(size=(7, data.image_dim)).astype(np.float32), top_k=5
    )
    city = int(data.train.targets[medoid, -1])
    share = float((data.train.targets[:, -1] == city).float().mean())
    for p in preds:
        assert len(p.answers) == 1
        assert (p.best.latitude, p.best.longitude) == pytest.approx(tuple(coords[medoid]))
        assert p.best.places[-1].entity_id == data.entity_ids[-1][city]
        assert p.best.confidence == pytest.approx(share)


def test_evaluate_split_chooses_rows_of_a_file_or_says_why_not(trained, tmp_path):
    """A metadata file's rows are chosen by its split column; a split it does not have, a
    file with a split column and no --split, or --split on a file without the column is one
    line, exit 2 — never every row scored as if they were that split."""
    knn = fit_model("knn", trained / "h", trained / "store", tmp_path / "knn")
    meta = pd.read_parquet(trained / "train.parquet")
    with_split = meta.assign(split=np.where(np.arange(len(meta)) % 3 == 0, "test", "train"))
    f = tmp_path / "m.parquet"
    with_split.to_parquet(f)
    res = runner.invoke(app, ["evaluate", str(knn), "--data", str(f), "--split", "val"])
    assert res.exit_code == 2 and "no row of" in res.output and "test, train" in res.output
    res = runner.invoke(app, ["evaluate", str(knn), "--data", str(f)])
    assert res.exit_code == 2 and "choose the rows to score with --split" in res.output
    out = tmp_path / "ev"
    res = runner.invoke(
        app, ["evaluate", str(knn), "--data", str(f), "--split", "test", "-o", str(out)]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == int((with_split["split"] == "test").sum()) and metrics["split"] == "test"
    plain = tmp_path / "plain.parquet"
    meta.to_parquet(plain)
    res = runner.invoke(app, ["evaluate", str(knn), "--data", str(plain), "--split", "test"])
    assert res.exit_code == 2 and "has no 'split' column" in res.output


def test_evaluate_labels_a_file_without_labels_as_training_was(trained, tmp_path):
    knn = fit_model("knn", trained / "h", trained / "store", tmp_path / "knn")
    meta = pd.read_parquet(trained / "train.parquet")[["id", "latitude", "longitude"]]
    f = tmp_path / "coords_only.csv"
    meta.to_csv(f, index=False)
    out = tmp_path / "ev"
    res = runner.invoke(app, ["evaluate", str(knn), "--data", str(f), "-o", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == len(meta) and metrics["entity"]["acc_country"] is not None


def test_ten_crop_is_for_geosurge_only(trained, tmp_path):
    knn = fit_model("knn", trained / "h", trained / "store", tmp_path / "knn")
    f = trained / "train.parquet"
    res = runner.invoke(
        app, ["evaluate", str(knn), "--data", str(f), "--ten-crop", "-o", str(tmp_path / "e")]
    )
    assert res.exit_code == 2 and "--ten-crop" in res.output and "knn models" in res.output
    assert not (tmp_path / "e").exists()
