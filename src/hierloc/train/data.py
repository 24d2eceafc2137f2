"""Training data on precomputed features: a hierarchy folder (entities, labels, mean image and
text embeddings) + a feature store, and optionally a validation metadata file whose records
are mapped to the same entities (a validation city absent from training gets ``-1`` at that
level: ignored by the loss, counted as a miss by the accuracy)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hierloc.data.features import FeatureStore
from hierloc.errors import InputError
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.hierarchy.io import EntityTables, entity_frame, load_entities
from hierloc.hierarchy.labels import metadata_entities

log = logging.getLogger(__name__)


@dataclass
class Split:
    features: torch.Tensor  # (N, D) float32
    targets: torch.Tensor  # (N, L) int64 row of the entity within its level, -1 unknown
    coords: torch.Tensor  # (N, 2) float64 degrees

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class TrainingData:
    entities: EntityTables
    entity_ids: list[np.ndarray]  # per level, object arrays (row → entity id)
    train: Split
    val: Split | None
    image_dim: int
    dropped: dict
    parent_rows: list[np.ndarray] = field(default_factory=list)  # level ℓ+1 → row in ℓ


def _split(feats: np.ndarray, targets: np.ndarray, coords: np.ndarray) -> Split:
    return Split(
        torch.from_numpy(np.ascontiguousarray(feats)),
        torch.from_numpy(targets.astype(np.int64)),
        torch.from_numpy(coords.astype(np.float64)),
    )


def load_training_data(
    hierarchy: str | Path, features: str | Path, val: str | Path | None = None
) -> TrainingData:
    store = FeatureStore.open(features)
    tables, ids, frame = load_entities(hierarchy)
    index = [{e: k for k, e in enumerate(level_ids)} for level_ids in ids]
    image_mean = tables.image_mean[0]
    if image_mean is not None and image_mean.shape[1] != store.dim:
        raise InputError(
            f"{hierarchy}: mean image embeddings are {image_mean.shape[1]}-d but {features} "
            f"holds {store.dim}-d features; build the hierarchy with --features {features}"
        )
    labels = pd.read_parquet(Path(hierarchy) / "labels.parquet")
    if "latitude" not in labels.columns:
        raise InputError(
            f"{hierarchy}/labels.parquet has no coordinates (built by an older hierloc); "
            "rebuild it with hierloc hierarchy build --overwrite"
        )
    feats, ok = store.lookup(labels["id"].to_numpy(dtype=object))
    if not ok.any():
        raise InputError(f"{features}: holds none of the training ids of {hierarchy}")
    labels = labels[ok]
    targets = np.stack(
        [labels[f"{lv}_id"].map(index[k]).to_numpy() for k, lv in enumerate(LEVEL_NAMES)], 1
    )
    train = _split(feats, targets, labels[["latitude", "longitude"]].to_numpy())
    dropped = {"train_without_features": int((~ok).sum())}
    val_split = None
    if val is not None:
        val_split, dropped["val_without_features"] = _val_split(val, store, index)
    ent = entity_frame(ids, frame)
    parents = [ent.loc[ent["level"] == lv, "parent_row"].to_numpy() for lv in range(1, len(ids))]
    return TrainingData(tables, ids, train, val_split, store.dim, dropped, parents)


def _val_split(path, store, index) -> tuple[Split, int]:
    frame = metadata_entities(path)
    t = np.stack(
        [
            frame[f"{lv}_id"].map(lambda e, k=k: index[k].get(e, -1)).to_numpy()
            for k, lv in enumerate(LEVEL_NAMES)
        ],
        1,
    )
    feats, ok = store.lookup(frame["id"].to_numpy(dtype=object))
    coords = frame[["latitude", "longitude"]].to_numpy()[ok]
    return _split(feats, t[ok], coords), int((~ok).sum())
