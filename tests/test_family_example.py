"""Adding a model family is one module: a tiny family ("centroid": each city's mean training
feature, the nearest by cosine answers), written here as a contributor would write it — its
config, its fit and folder writer, its folder spec and its locator — registered with
:func:`hierloc.train.families.register_training_family` and
:func:`hierloc.locate.register_family`, then run through ``hierloc train`` → ``predict`` →
``evaluate`` → ``compare`` with nothing changed in eval, serve, the CLI or the workflows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hierloc.checks import integer
from hierloc.cli import app
from hierloc.data.features import FeatureStore
from hierloc.data.formats import MODEL_FOLDER_KINDS
from hierloc.data.manifests import encoder_description, read_model_manifest
from hierloc.data.spec import Array, Spec, Table
from hierloc.data.writers import check_folder_output, staged_folder
from hierloc.hierarchy.io import ENTITY_FRAME_COLUMNS, entity_frame
from hierloc.locate import _FAMILIES, Family, _builtin_families, load_locator, register_family
from hierloc.locate.base import BaseLocator, EntityNames
from hierloc.locate.types import Locator, Prediction
from hierloc.train.data import load_training_data
from hierloc.train.families import FAMILIES, TrainingFamily, needs_hierarchy

runner = CliRunner()
FORMAT = "example-centroid"


# -- the family: what a contributor writes ----------------------------------------------------
@dataclass(frozen=True)
class CentroidConfig:
    min_images: int = 1  # cities with fewer training images are left out

    def __post_init__(self) -> None:
        integer("min_images", self.min_images, 1)


@dataclass(frozen=True)
class CentroidTrainConfig:
    centroid: CentroidConfig = field(default_factory=CentroidConfig)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def fit_centroids(name, cfg, hierarchy, features, output, overwrite) -> Path:
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, [hierarchy, features])
    data = load_training_data(hierarchy, features)
    city = data.train.targets[:, -1].numpy()
    x = _unit(data.train.features.numpy())
    n_city = len(data.entity_ids[-1])
    counts = np.bincount(city, minlength=n_city)
    sums = np.zeros((n_city, x.shape[1]))
    np.add.at(sums, city, x)
    keep = counts >= cfg.centroid.min_images
    centroids = _unit(sums / np.maximum(counts, 1)[:, None]) * keep[:, None]
    store = FeatureStore.open(features)
    from hierloc.hierarchy.io import load_entities

    _, ids, frame = load_entities(hierarchy)
    manifest = {
        "format": FORMAT,
        "version": 1,
        "image_dim": int(x.shape[1]),
        "cities": n_city,
        "encoder": encoder_description(store.manifest.get("encoder")),
        "features": str(Path(features).resolve()),
    }
    with staged_folder(Path(output), overwrite, MODEL_FOLDER_KINDS, [hierarchy, features]) as t:
        entity_frame(ids, frame).to_parquet(t / "entities.parquet", index=False)
        np.save(t / "centroids.npy", centroids.astype(np.float32))
        (t / "manifest.json").write_text(json.dumps(manifest))
    return Path(output)


def centroid_spec() -> Spec:
    return Spec(
        "centroid model folder",
        "train it again (hierloc train --model centroid)",
        {"cities": int, "image_dim": int},
        lambda m: [
            Table("entities.parquet", "entity table", ENTITY_FRAME_COLUMNS),
            Array("centroids.npy", "city centroids", ("float32",), ("cities", "image_dim")),
        ],
        lambda m: {"cities": int(m["cities"]), "image_dim": int(m["image_dim"])},
    )


class CentroidLocator(BaseLocator):
    def __init__(self, path: Path, manifest: dict) -> None:
        self.path, self.manifest = path, manifest
        self.names = EntityNames(pd.read_parquet(path / "entities.parquet"))
        self.centroids = torch.from_numpy(np.load(path / "centroids.npy"))
        self._encoder = None

    @classmethod
    def load(cls, path, device: str = "cpu", manifest: dict | None = None) -> CentroidLocator:
        return cls(Path(path), manifest or read_model_manifest(Path(path), FORMAT, 1, "retrain"))

    @property
    def family(self) -> str:
        return "centroid"

    def _counts(self) -> dict:
        return {"cities": int(self.manifest["cities"])}

    def predict_features(self, features, *, ids=None, top_k=5, beam=10, search="beam"):
        x = torch.from_numpy(_unit(self.check_features(features)))
        ids = [str(i) for i in range(len(x))] if ids is None else [str(i) for i in ids]
        score, rows = (x @ self.centroids.T).topk(min(top_k, len(self.centroids)), dim=1)
        conf = torch.softmax(score / 0.05, dim=1)
        out = []
        for b, ident in enumerate(ids):
            answers = [
                self.names.answer(
                    self.names.path_of(int(rows[b, j])), float(score[b, j]), float(conf[b, j])
                )
                for j in range(rows.shape[1])
            ]
            out.append(Prediction(ident, answers))
        return out


@pytest.fixture
def centroid_family(monkeypatch):
    """Registered for one test (the registries are process-wide)."""
    monkeypatch.setitem(
        FAMILIES,
        "centroid",
        TrainingFamily(
            "centroid",
            CentroidTrainConfig,
            "fit",
            ("--hierarchy", "--config", "--overwrite"),
            needs_hierarchy("centroid"),
            bare="centroid",
            fit=fit_centroids,
        ),
    )
    _builtin_families()  # the built-in families first, so the example joins them
    register_family(Family(FORMAT, 1, CentroidLocator.load, spec=centroid_spec))
    yield
    del _FAMILIES[FORMAT]
    MODEL_FOLDER_KINDS.remove(FORMAT)


# -- the journey through code that knows nothing of the family --------------------------------
def test_an_example_family_runs_train_predict_evaluate_compare(centroid_family, trained, tmp_path):
    h, store = trained / "h", trained / "store"
    model = tmp_path / "centroid"
    res = runner.invoke(
        app,
        ["train", "--model", "centroid", "--hierarchy", str(h), "--features", str(store),
         "-o", str(model), "--set", "min_images=1"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    loc = load_locator(model)
    assert isinstance(loc, CentroidLocator) and loc.describe()["family"] == "centroid"
    assert isinstance(loc, Locator)  # the whole protocol, from BaseLocator and its own methods
    # its folder is a model folder like the others: replaced only with --overwrite
    again = ["train", "--model", "centroid", "--hierarchy", str(h), "--features", str(store),
             "-o", str(model)]  # fmt: skip
    assert runner.invoke(app, again).exit_code == 2
    res = runner.invoke(app, [*again, "--overwrite"])
    assert res.exit_code == 0, res.output

    # its answers are brute force over the training images' city means
    data = load_training_data(h, store)
    x = data.train.features.numpy().astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    city = data.train.targets[:, -1].numpy()
    means = np.zeros((len(data.entity_ids[-1]), x.shape[1]))
    for c in np.unique(city):
        m = x[city == c].mean(0)
        means[c] = m / np.linalg.norm(m)
    want = [data.entity_ids[-1][i] for i in (x[:20] @ means.T).argmax(1)]
    got = [p.best.places[-1].entity_id for p in loc.predict_features(x[:20].astype(np.float32))]
    assert got == want

    # hierloc evaluate and hierloc compare, unchanged
    res = runner.invoke(app, ["evaluate", str(model), "--data", str(trained / "train.parquet"),
                              "-o", str(tmp_path / "ev")])  # fmt: skip
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    preds = pd.read_parquet(tmp_path / "ev" / "predictions.parquet")
    assert metrics["entity"]["geoscore"] == pytest.approx(
        float(np.mean(5000 * np.exp(-preds["error_km"].to_numpy() / 1492.7))), rel=1e-9
    )
    res = runner.invoke(
        app,
        ["compare", "--hierarchy", str(h), "--features", str(store), "--data",
         str(trained / "train.parquet"), "-o", str(tmp_path / "cmp"), "--models",
         "centroid,knn", "-f", "json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    table = json.loads(res.stdout[res.stdout.index("{") :])
    assert set(table) == {"centroid", "knn"}
    # a bad key of the family's own config is one line, exit 2, before any work
    res = runner.invoke(
        app,
        ["train", "--model", "centroid", "--hierarchy", str(h), "--features", str(store),
         "-o", str(tmp_path / "bad"), "--set", "min_image=2"],
    )  # fmt: skip
    assert res.exit_code == 2 and "min_images" in res.output and not (tmp_path / "bad").exists()
