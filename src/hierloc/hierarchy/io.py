"""Reading and writing hierarchy folders (DESIGN.md), statistics and the paper's JSON tree.

A hierarchy folder holds:

* ``entities.parquet`` — ``entity_id, level, level_name, parent_id, name, latitude,
  longitude, count`` (+ ``image_count`` with features), sorted by (level, entity_id);
* ``labels.parquet`` — one row per accepted record, in file order: ``id, latitude, longitude,
  country_id, region_id, subregion_id, city_id`` (a truth file ``hierloc score --protocol
  entity`` reads as is);
* ``image_mean.npy`` (float32, rows aligned with entities) when built with features;
* ``text.npy`` (float32) when built with a text encoder;
* ``manifest.json`` — inputs, options, counts; no timestamps, so equal inputs give
  byte-identical folders;
* ``rejects.csv`` when rows were rejected.

Folders are written to a temp folder and swapped in at the end: a failed build never leaves a
half-written hierarchy and never damages an existing one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hierloc.data.artifacts import read_json, read_npy, read_parquet
from hierloc.errors import InputError
from hierloc.hierarchy.build import LEVEL_NAMES, Hierarchy

FORMAT = "hierloc-hierarchy"
REBUILD = "rebuild the folder with hierloc hierarchy build … --overwrite"
VERSION = 1


@dataclass
class EntityTables:
    """Per level (coarse → fine): mean coordinates ``(E, 2)`` degrees, mean image embeddings
    ``(E, D_img)`` or ``None``, text embeddings ``(E, D_txt)`` or ``None``."""

    coords: list[np.ndarray]
    image_mean: list[np.ndarray | None] = field(default_factory=list)
    text: list[np.ndarray | None] = field(default_factory=list)


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


def write_entities(hierarchy: Hierarchy, folder: Path) -> None:
    table = pa.Table.from_pandas(hierarchy.entities, preserve_index=False)
    pq.write_table(table, folder / "entities.parquet")
    if hierarchy.image_mean is not None:
        np.save(folder / "image_mean.npy", hierarchy.image_mean)
    if hierarchy.text is not None:
        np.save(folder / "text.npy", hierarchy.text)


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@dataclass
class HierarchyFolder:
    path: Path
    entities: pd.DataFrame
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> HierarchyFolder:
        path = Path(path)
        if not (path / "entities.parquet").exists() or not (path / "manifest.json").exists():
            raise InputError(
                f"{path}: not a hierarchy folder (entities.parquet / manifest.json missing); "
                "build one with hierloc hierarchy build"
            )
        manifest = read_json(path / "manifest.json", "hierarchy manifest", REBUILD)
        if manifest.get("format") != FORMAT:
            raise InputError(f"{path}/manifest.json: not a {FORMAT} manifest")
        if manifest.get("version", 0) > VERSION:
            raise InputError(
                f"{path}: hierarchy format version {manifest['version']} is newer than this "
                f"hierloc reads ({VERSION}); upgrade hierloc"
            )
        entities = read_parquet(path / "entities.parquet", "entity table", REBUILD)
        return cls(path=path, entities=entities, manifest=manifest)

    def image_mean(self) -> np.ndarray | None:
        f = self.path / "image_mean.npy"
        return read_npy(f, "mean image embeddings", REBUILD, mmap=True) if f.exists() else None

    def text(self) -> np.ndarray | None:
        f = self.path / "text.npy"
        return read_npy(f, "text embeddings", REBUILD, mmap=True) if f.exists() else None


def stats(folder: HierarchyFolder, top: int = 10) -> dict:
    """Entities per level, images per entity (quantiles), placeholders, top countries."""
    ent = folder.entities
    out: dict = {"records": int(ent.loc[ent["level"] == 0, "count"].sum()), "levels": {}}
    for depth, level in enumerate(LEVEL_NAMES):
        rows = ent[ent["level"] == depth]
        counts = rows["count"].to_numpy()
        placeholders = int(rows["entity_id"].str.endswith("/_").sum()) if depth else 0
        q = np.quantile(counts, [0.5, 0.9, 0.99]) if len(counts) else [0, 0, 0]
        out["levels"][level] = {
            "entities": len(rows),
            "placeholders": placeholders,
            "images_min": int(counts.min()) if len(counts) else 0,
            "images_median": float(q[0]),
            "images_mean": float(counts.mean()) if len(counts) else 0.0,
            "images_p90": float(q[1]),
            "images_p99": float(q[2]),
            "images_max": int(counts.max()) if len(counts) else 0,
        }
    countries = ent[ent["level"] == 0].sort_values(["count", "entity_id"], ascending=[False, True])
    out["top_countries"] = [
        {"id": r.entity_id, "name": r.name, "images": int(r.count)}
        for r in countries.head(top).itertuples(index=False)
    ]
    return out


def export_tree(folder: HierarchyFolder) -> dict:
    """The paper's JSON serialisation: nested ``{id, name, level, lat, lon, count, children}``."""
    ent = folder.entities
    nodes = {
        r.entity_id: {
            "id": r.entity_id,
            "name": r.name,
            "level": r.level_name,
            "latitude": round(float(r.latitude), 6),
            "longitude": round(float(r.longitude), 6),
            "count": int(r.count),
            "children": [],
        }
        for r in ent.itertuples(index=False)
    }
    roots = []
    for r in ent.itertuples(index=False):  # entities are sorted, so children come sorted
        if r.parent_id is None or pd.isna(r.parent_id):
            roots.append(nodes[r.entity_id])
        else:
            nodes[r.parent_id]["children"].append(nodes[r.entity_id])
    for node in nodes.values():
        if node["level"] == "city":
            del node["children"]
    return {"format": FORMAT, "version": VERSION, "countries": roots}


ENTITY_FRAME_COLUMNS = (
    "level",
    "row",
    "entity_id",
    "name",
    "latitude",
    "longitude",
    "count",
    "parent_row",
)


def entity_frame(ids: list[np.ndarray], frame: pd.DataFrame) -> pd.DataFrame:
    """``entities.parquet`` of a model folder from a hierarchy's entities (``load_entities``):
    ``level, row, entity_id, name, latitude, longitude, count, parent_row``."""
    rows = []
    for lv, level_ids in enumerate(ids):
        sub = frame[frame["level"] == lv].reset_index(drop=True)
        if lv:
            pos = {e: k for k, e in enumerate(ids[lv - 1])}
            parent_row = sub["parent_id"].map(pos).to_numpy()
        else:
            parent_row = np.full(len(sub), -1)
        rows.append(
            pd.DataFrame(
                {
                    "level": lv,
                    "row": np.arange(len(sub)),
                    "entity_id": level_ids,
                    "name": sub["name"].astype(str),
                    "latitude": sub["latitude"],
                    "longitude": sub["longitude"],
                    "count": sub["count"],
                    "parent_row": parent_row.astype(np.int64),
                }
            )
        )
    return pd.concat(rows, ignore_index=True)
