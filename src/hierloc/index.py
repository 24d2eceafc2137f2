"""Index folders: everything prediction needs from a trained HierLoc run, and nothing else.

``hierloc index RUN_OR_CHECKPOINT -o MODEL_DIR`` writes (atomically, DESIGN.md):

* ``points_{ℓ}.npy`` — the final entity embeddings of level ``ℓ`` (ambient manifold
  coordinates, float32, or float16 with ``--half``);
* ``ptr_{ℓ}.npy``, ``child_{ℓ}.npy`` — the parent → children lists (CSR, int64) between levels
  ``ℓ`` and ``ℓ+1``;
* ``entities.parquet`` — ``level, row, entity_id, name, latitude, longitude, count,
  parent_row`` (row = position within the level, as in the point arrays);
* ``query.safetensors`` + ``config.yaml`` — the image side of the model (image stream,
  attention, fuse MLP) and its resolved config;
* ``manifest.json`` — format and version, manifold, ``K``, squared distances, the learned
  temperature, levels and counts, the image feature dimension, the encoder that made the
  training features (so ``hierloc predict`` can embed raw images), and the sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hierloc.data.artifacts import read_json, read_npy, read_parquet, read_safetensors
from hierloc.errors import InputError

FORMAT = "hierloc-index"
VERSION = 1
SOURCES = "sources.json"  # written by `hierloc train` in the run folder


def write_sources(run_dir: Path, model: str = "hierloc", **paths: Path | None) -> None:
    """Record a run's model and inputs (absolute paths) so that ``hierloc index`` finds them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"model": model} | {k: None if v is None else str(Path(v).resolve())
                               for k, v in paths.items()}  # fmt: skip
    (run_dir / SOURCES).write_text(json.dumps(data, indent=2) + "\n")


def encoder_description(value) -> dict | None:
    """A feature store's ``encoder`` entry as ``{"name": …, …}``, or ``None`` when unknown."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or value.get("name") in (None, "", "unknown"):
        return None
    return value


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
        rows.append(pd.DataFrame({
            "level": lv, "row": np.arange(len(sub)), "entity_id": level_ids,
            "name": sub["name"].astype(str), "latitude": sub["latitude"],
            "longitude": sub["longitude"], "count": sub["count"],
            "parent_row": parent_row.astype(np.int64),
        }))  # fmt: skip
    return pd.concat(rows, ignore_index=True)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``(checkpoint folder, run folder)`` from either: a run folder gives its ``best``
    checkpoint, else its latest ``ckpt-*``."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path, path.parent
    if not path.is_dir():
        raise InputError(f"{path}: no such run or checkpoint folder")
    for cand in [path / "best", *sorted(path.glob("ckpt-*"), reverse=True)]:
        if (cand / "model.safetensors").exists():
            return cand, path
    raise InputError(f"{path}: holds no checkpoint (model.safetensors); train with hierloc train")


def build_index(checkpoint: str | Path, output: str | Path, hierarchy: str | Path | None = None,
                half: bool = False, overwrite: bool = False,
                calibrate_on: str | Path | None = None) -> Path:  # fmt: skip
    """Compute the final entity embeddings of a checkpoint and write an index folder; the
    confidences are calibrated on ``calibrate_on`` (default: the run's validation split, when
    it had one; see :func:`calibrate`)."""
    from safetensors.torch import save_file

    from hierloc.data.writers import MODEL_FOLDER_KINDS, check_folder_output, staged_folder
    from hierloc.losses import GWHInfoNCE
    from hierloc.models import create_model
    from hierloc.search import csr_children
    from hierloc.train.config import load_config, save_config
    from hierloc.train.data import load_entities

    ckpt, run = resolve_checkpoint(checkpoint)
    from hierloc.geosurge_index import build_geosurge_model, is_geosurge_run

    if is_geosurge_run(run):
        return build_geosurge_model(ckpt, run, Path(output), overwrite)
    sources = json.loads((run / SOURCES).read_text()) if (run / SOURCES).exists() else {}
    hierarchy = hierarchy or sources.get("hierarchy")
    if hierarchy is None:
        raise InputError(f"{run}: no {SOURCES} naming the hierarchy; pass --hierarchy")
    reads = [ckpt, run, hierarchy, sources.get("features"), calibrate_on]
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, reads)
    cfg = load_config(ckpt / "config.yaml")
    tables, ids, frame = load_entities(hierarchy)
    state = read_safetensors(ckpt / "model.safetensors", "checkpoint's weights",
                             "train again, or pass another checkpoint")  # fmt: skip
    key = "image_mlp.0.weight"
    if key not in state:
        raise InputError(f"{ckpt}: not a HierLoc checkpoint (no {key})")
    image_dim = int(state[key].shape[1])
    model = create_model("hierloc", cfg.model, image_dim, tables)
    counts = [int(v.shape[0]) for k, v in sorted(state.items()) if k.startswith("anchors.")]
    if counts != model.entity_counts:
        raise InputError(
            f"{ckpt} was trained on {counts} entities per level but {hierarchy} holds "
            f"{model.entity_counts}; pass the hierarchy it was trained with (--hierarchy)"
        )
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("loss.")})
    model.eval()
    with torch.no_grad():
        points = model.entity_embeddings()
    loss = GWHInfoNCE(cfg.loss)  # τ as the loss used it (clamped)
    loss.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("loss.")})
    tau = float(loss.tau.detach())
    encoder = None
    feat_manifest = Path(sources.get("features", "")) / "manifest.json"
    if sources.get("features") and feat_manifest.exists():
        encoder = encoder_description(json.loads(feat_manifest.read_text()).get("encoder"))
    entities = entity_frame(ids, frame)
    output = Path(output)
    if half:  # float16 holds magnitudes up to 65,504 (Lorentz x0 = R·cosh(r/R): r ≈ 10.6)
        for lv, p in enumerate(points):
            big = float(p.abs().max())
            if not big < float(np.finfo(np.float16).max):
                raise InputError(f"{ckpt}: level {lv} has coordinates up to {big:.4g}, beyond "
                                 "float16's 65,504; build the index without --half")  # fmt: skip
    with staged_folder(output, overwrite, MODEL_FOLDER_KINDS, reads) as tmp:
        for lv, p in enumerate(points):
            np.save(tmp / f"points_{lv}.npy", p.numpy().astype(np.float16 if half else np.float32))
        for lv in range(1, len(points)):
            par = entities.loc[entities["level"] == lv, "parent_row"].to_numpy()
            ptr, child = csr_children(par, len(points[lv - 1]))
            np.save(tmp / f"ptr_{lv - 1}.npy", ptr)
            np.save(tmp / f"child_{lv - 1}.npy", child)
        entities.to_parquet(tmp / "entities.parquet", index=False)
        save_file({k: v.contiguous() for k, v in model.query_state_dict().items()},
                  str(tmp / "query.safetensors"))  # fmt: skip
        save_config(cfg, tmp / "config.yaml")
        manifest = {
            "format": FORMAT, "version": VERSION, "manifold": cfg.model.manifold,
            "K": cfg.model.K, "squared": cfg.loss.squared_distance, "tau": tau,
            "levels": len(points), "counts": [len(p) for p in points],
            "dtype": "float16" if half else "float32", "image_dim": image_dim,
            "encoder": encoder, "checkpoint": str(ckpt.resolve()),
            "hierarchy": str(Path(hierarchy).resolve()), "features": sources.get("features"),
        }  # fmt: skip
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if calibrate_on is None:
        calibrate_on = sources.get("val")
    if calibrate_on and sources.get("features"):
        calibrate(output, calibrate_on, sources["features"])
    return output


@dataclass
class LoadedIndex:
    manifest: dict
    index: object  # hierloc.search.EntityIndex
    entities: pd.DataFrame
    query: torch.nn.Module  # HierLocQuery
    context: list[torch.Tensor] | None  # attention keys/values of every level


def load_index(path: str | Path) -> LoadedIndex:
    """Open an index folder written by :func:`build_index` (checks format and version)."""

    from hierloc.geometry import get_manifold
    from hierloc.models.hierloc import HierLocQuery
    from hierloc.search import EntityIndex
    from hierloc.train.config import load_config

    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise InputError(f"{path}: not a model folder (no manifest.json); build one with "
                         "hierloc index RUN -o MODEL_DIR")  # fmt: skip
    fix = "rebuild the folder with hierloc index RUN -o MODEL_DIR --overwrite"
    manifest = read_json(mpath, "model-folder manifest", fix)
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a hierloc index folder (format {manifest.get('format')!r})")
    if manifest.get("version") != VERSION:
        raise InputError(f"{path}: index version {manifest.get('version')} but this hierloc reads "
                         f"version {VERSION}; rebuild it with hierloc index")  # fmt: skip
    L = int(manifest["levels"])
    points = [torch.from_numpy(read_npy(path / f"points_{lv}.npy", "entity points", fix))
              for lv in range(L)]  # fmt: skip
    ptr = [torch.from_numpy(read_npy(path / f"ptr_{lv}.npy", "children offsets", fix))
           for lv in range(L - 1)]  # fmt: skip
    child = [torch.from_numpy(read_npy(path / f"child_{lv}.npy", "children lists", fix))
             for lv in range(L - 1)]  # fmt: skip
    entities = read_parquet(path / "entities.parquet", "entity table", fix)
    state = read_safetensors(path / "query.safetensors", "image-side weights", fix)
    if [len(p) for p in points] != manifest["counts"]:
        raise InputError(f"{path}: the point arrays do not match manifest.json's counts")
    manifold = get_manifold(manifest["manifold"], K=manifest["K"])
    index = EntityIndex(manifold, points, ptr, child, squared=bool(manifest["squared"]))
    cfg = load_config(path / "config.yaml")
    query = HierLocQuery(cfg.model, int(manifest["image_dim"]), L)
    query.load_state_dict(state)
    query.eval()
    with torch.no_grad():
        context = query.entity_context([p.float() for p in points])
    return LoadedIndex(manifest, index, entities, query, context)


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted pool-adjacent-violators: the non-decreasing sequence closest to ``values``
    (a handful of bins: a loop over bins)."""
    blocks: list[list[float]] = []  # [value, weight, size]
    for v, w in zip(values.tolist(), weights.tolist(), strict=True):
        blocks.append([v, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(n, v) for v, _, n in blocks])


def calibrate(model_dir: str | Path, val: str | Path, features: str | Path,
              beam: int = 10, bins: int = 10) -> dict:  # fmt: skip
    """Calibrate a model folder's confidences on a labelled validation split (histogram
    binning, per level): the top answer's raw per-level confidence (see :mod:`hierloc.predict`)
    is cut into ``bins`` equal-count bins; each bin maps to the share of its validation images
    whose top answer is right at that level (``(hits + 1)/(n + 2)``, made non-decreasing by
    pooling adjacent bins, weighted by their counts).
    Written into ``manifest.json`` as ``calibration``; returns it."""
    from hierloc.data.writers import write_file_atomic
    from hierloc.eval.evaluate import LEVELS, features_for
    from hierloc.predict import Geolocator, level_confidences
    from hierloc.train.data import metadata_entities

    geo = Geolocator.load(model_dir)
    truth = metadata_entities(val)
    feats, ok = features_for(features, truth["id"].to_numpy(dtype=object))
    truth = truth[ok].reset_index(drop=True)
    if not len(truth):
        raise InputError(f"{val}: none of its images are in {features}; cannot calibrate")
    res = geo.search(feats, top_k=1, beam=beam)
    raw = level_confidences(res.paths, res.scores, geo.raw_temperature)[:, 0, :].numpy()
    ent = geo._loaded.entities
    levels = {}
    for lv, name in enumerate(LEVELS[: res.paths.shape[2]]):
        sub = ent[ent["level"] == lv]
        pos = dict(zip(sub["entity_id"], sub["row"], strict=True))
        true = truth[f"{name}_id"].map(pos).fillna(-1).astype(np.int64).to_numpy()
        right = res.paths[:, 0, lv].numpy() == true
        edges = np.unique(np.quantile(raw[:, lv], np.linspace(0, 1, bins + 1)[1:-1]))
        which = np.searchsorted(edges, raw[:, lv], side="right")
        hits = np.bincount(which, right, minlength=len(edges) + 1)
        count = np.bincount(which, minlength=len(edges) + 1)
        values = _isotonic((hits + 1) / (count + 2), count + 2)
        levels[name] = {"edges": edges.tolist(), "values": values.tolist(),
                        "accuracy": float(right.mean())}  # fmt: skip
    calibration = {"val": str(Path(val).resolve()), "images": len(truth), "beam": beam,
                   "method": "histogram binning", "levels": levels}  # fmt: skip
    manifest = dict(geo.manifest) | {"calibration": calibration}
    write_file_atomic(Path(model_dir) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return calibration
