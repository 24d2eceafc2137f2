"""``hierloc bench bluemarble``: how hard is the offline benchmark? A 1-NN retrieval baseline
(cosine on frozen features, train patches as the gallery) at several patch sizes, measured side
by side, to choose defaults where country accuracy lies between 30 % and 70 %."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.bluemarble import build
from hierloc.data.extract import extract
from hierloc.data.features import FeatureStore
from hierloc.eval.metrics import distance_metrics
from hierloc.geo.haversine import haversine_km


def one_nn(train_feats: np.ndarray, test_feats: np.ndarray, block: int = 1024) -> np.ndarray:
    """Index of the most cosine-similar training row for each test row (exact)."""
    a = train_feats / np.linalg.norm(train_feats, axis=1, keepdims=True).clip(1e-12)
    b = test_feats / np.linalg.norm(test_feats, axis=1, keepdims=True).clip(1e-12)
    return np.concatenate(
        [np.argmax(b[i : i + block] @ a.T, axis=1) for i in range(0, len(b), block)]
    )


def split_features(
    root: Path, encoder: str, splits: tuple[str, ...], workers: int | None = None
) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The benchmark folder's features under ``root/features`` (extracted, resumable), and per
    split its metadata rows and their features ``(N, D)`` float32, in the same order."""
    meta = pd.read_parquet(root / "metadata.parquet")
    extract([root / "metadata.parquet"], root / "features", encoder=encoder, workers=workers)
    store = FeatureStore.open(root / "features")
    feats = np.asarray(store.features, dtype=np.float32)
    row = {i: k for k, i in enumerate(store.ids.to_pylist())}
    out = {}
    for split in splits:
        frame = meta[meta["split"] == split].reset_index(drop=True)
        out[split] = (frame, feats[[row[i] for i in frame["id"]]])
    return out


def evaluate(root: Path, encoder: str, workers: int | None = None) -> dict:
    parts = split_features(root, encoder, ("train", "test"), workers)
    (train, xtr), (test, xte) = parts["train"], parts["test"]
    nn = one_nn(xtr, xte)
    pred = train.iloc[nn].reset_index(drop=True)
    d = haversine_km(pred["latitude"], pred["longitude"], test["latitude"], test["longitude"])
    m = distance_metrics(d)
    for level, col in (("country", "country"), ("region", "region")):
        truth = test[col].astype(str) + "|" + test["country"]
        guess = pred[col].astype(str) + "|" + pred["country"]
        m[f"acc_{level}"] = float((truth == guess).mean())
    return m


def run(
    patches: tuple[int, ...] = (16, 32, 64),
    block: float = 4.0,
    train: int = 3000,
    test: int = 500,
    encoder: str = "efficientnet-lite0-onnx",
    seed: int = 0,
) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in patches:
            root = Path(tmp) / f"p{p}"
            manifest = build(
                root,
                patch=p,
                block=block,
                seed=seed,
                counts={"train": train, "val": 0, "test": test},
            )
            m = evaluate(root, encoder)
            rows.append(
                {
                    "patch_px": p,
                    "patch_km": manifest["patch_km_equator"],
                    "block_degrees": block,
                    **{k: round(v, 4) for k, v in m.items() if k != "n"},
                    "n_test": m["n"],
                }
            )
    return {"encoder": encoder, "train": train, "test": test, "rows": rows}
