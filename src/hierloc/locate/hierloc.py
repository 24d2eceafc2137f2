"""HierLoc's model folders: building them from a run, loading them, predicting, calibrating.

``hierloc index RUN_OR_CHECKPOINT -o MODEL_DIR`` (:func:`build_model_folder`) writes
(atomically, DESIGN.md):

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

Prediction (:class:`Geolocator`): per image the best ``top_k`` paths of a beam search (width
``beam``): country / region / subregion / city names, the city's mean coordinates, the path
score and a confidence.

Confidence, per level. Uncalibrated, an answer's entity gets the total ``softmax(scores / τ)``
(``τ`` the temperature learned with the loss) of the beam's paths through it (a country shared by
several paths gets their sum). When the model folder was calibrated on a validation split
(:func:`calibrate`, done by ``hierloc index`` when the run had one), an answer's entity at level
``ℓ`` gets its probability under the softmax of the query's scores against **every** entity of
level ``ℓ``, at temperature ``τ·T_ℓ``, ``T_ℓ`` fit on the validation split (temperature scaling
per level, chosen there against histogram binning and isotonic regression:
``scripts/calibration_study.py``). It costs one pass over the level's entities per query, and
is an estimate of the probability of being right at that level. ``confidence`` is the finest
level's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from hierloc.config import load_config, save_config
from hierloc.data.artifacts import read_npy, read_parquet, read_safetensors
from hierloc.data.features import FeatureStore
from hierloc.data.formats import MODEL_FOLDER_KINDS
from hierloc.data.manifests import (
    REBUILD,
    SOURCES,
    encoder_description,
    read_model_manifest,
    read_sources,
)
from hierloc.data.spec import Array, Document, Spec, Table, Weights, module_shapes
from hierloc.data.writers import (
    check_folder_output,
    staged_folder,
    write_file_atomic,
)
from hierloc.errors import InputError
from hierloc.geometry import get_manifold
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.hierarchy.io import ENTITY_FRAME_COLUMNS, entity_frame, load_entities
from hierloc.hierarchy.labels import metadata_entities
from hierloc.locate.base import BaseLocator, EntityNames
from hierloc.locate.types import Prediction
from hierloc.losses import GWHInfoNCE
from hierloc.models import create_model
from hierloc.models.hierloc import HierLocQuery
from hierloc.search import EntityIndex, beam_search, csr_children, flat_search

FORMAT = "hierloc-index"
VERSION = 1


def build_model_folder(
    ckpt: Path,
    run: Path,
    output: str | Path,
    hierarchy: str | Path | None = None,
    half: bool = False,
    overwrite: bool = False,
    calibrate_on: str | Path | None = None,
) -> Path:
    """Compute the final entity embeddings of checkpoint ``ckpt`` (of run ``run``) and write a
    model folder; the confidences are calibrated on ``calibrate_on`` (default: the run's
    validation split, when it had one; see :func:`calibrate`)."""
    sources = read_sources(run)
    hierarchy = hierarchy or sources.get("hierarchy")
    if hierarchy is None:
        raise InputError(f"{run}: no {SOURCES} naming the hierarchy; pass --hierarchy")
    reads = [ckpt, run, hierarchy, sources.get("features"), calibrate_on]
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, reads)
    cfg = load_config(ckpt / "config.yaml")
    tables, ids, frame = load_entities(hierarchy)
    state = read_safetensors(
        ckpt / "model.safetensors",
        "checkpoint's weights",
        "train again, or pass another checkpoint",
    )
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
    if sources.get("features"):
        encoder = encoder_description(
            FeatureStore.open(sources["features"]).manifest.get("encoder")
        )
    entities = entity_frame(ids, frame)
    output = Path(output)
    if half:  # float16 holds magnitudes up to 65,504 (Lorentz x0 = R·cosh(r/R): r ≈ 10.6)
        for lv, p in enumerate(points):
            big = float(p.abs().max())
            if not big < float(np.finfo(np.float16).max):
                raise InputError(
                    f"{ckpt}: level {lv} has coordinates up to {big:.4g}, beyond "
                    "float16's 65,504; build the index without --half"
                )
    with staged_folder(output, overwrite, MODEL_FOLDER_KINDS, reads) as tmp:
        for lv, p in enumerate(points):
            np.save(tmp / f"points_{lv}.npy", p.numpy().astype(np.float16 if half else np.float32))
        for lv in range(1, len(points)):
            par = entities.loc[entities["level"] == lv, "parent_row"].to_numpy()
            ptr, child = csr_children(par, len(points[lv - 1]))
            np.save(tmp / f"ptr_{lv - 1}.npy", ptr)
            np.save(tmp / f"child_{lv - 1}.npy", child)
        entities.to_parquet(tmp / "entities.parquet", index=False)
        save_file(
            {k: v.contiguous() for k, v in model.query_state_dict().items()},
            str(tmp / "query.safetensors"),
        )
        save_config(cfg, tmp / "config.yaml")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "manifold": cfg.model.manifold,
            "K": cfg.model.K,
            "squared": cfg.loss.squared_distance,
            "tau": tau,
            "levels": len(points),
            "counts": [len(p) for p in points],
            "dtype": "float16" if half else "float32",
            "image_dim": image_dim,
            "encoder": encoder,
            "checkpoint": str(ckpt.resolve()),
            "hierarchy": str(Path(hierarchy).resolve()),
            "features": sources.get("features"),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if calibrate_on is None:
            calibrate_on = sources.get("val")
        if calibrate_on and sources.get("features"):  # inside: the folder appears calibrated
            calibrate(tmp, calibrate_on, sources["features"])
    return output


@dataclass
class LoadedIndex:
    manifest: dict
    index: object  # hierloc.search.EntityIndex
    entities: pd.DataFrame
    query: torch.nn.Module  # HierLocQuery
    context: list[torch.Tensor] | None  # attention keys/values of every level


def folder_spec() -> Spec:
    """What a HierLoc model folder holds (:mod:`hierloc.data.spec`), checked before it loads."""

    def files(m: dict) -> list:
        L = int(m["levels"])
        if L < 1 or len(m["counts"]) != L:
            raise ValueError(f"levels {L} but {len(m['counts'])} counts")
        points = ("float16", "float32", "float64")
        out = [Document("config.yaml", "image side's config", load_config, "config")]
        out += [
            Array(f"points_{lv}.npy", "entity points", points, (f"E{lv}", "D")) for lv in range(L)
        ]
        for lv in range(L - 1):
            out.append(Array(f"ptr_{lv}.npy", "children offsets", ("int64",), (f"ptr{lv}",)))
            out.append(
                Array(f"child_{lv}.npy", "children lists", ("int64",), (None,), f"E{lv + 1}")
            )
        out.append(Table("entities.parquet", "entity table", ENTITY_FRAME_COLUMNS, "entities"))
        out.append(Weights("query.safetensors", "image-side weights", _query_shapes))
        return out

    def dims(m: dict) -> dict:
        counts = [int(c) for c in m["counts"]]
        out = {f"E{lv}": c for lv, c in enumerate(counts)}
        out |= {f"ptr{lv}": c + 1 for lv, c in enumerate(counts[:-1])}
        return out | {"entities": sum(counts), "image_dim": int(m["image_dim"])}

    return Spec(
        "HierLoc model folder",
        REBUILD,
        {"levels": int, "counts": list, "manifold": str, "K": (int, float), "squared": bool,
         "tau": (int, float), "image_dim": int},
        files,
        dims,
    )  # fmt: skip


def _query_shapes(context: dict) -> dict:
    m = context["manifest"]
    return module_shapes(
        lambda: HierLocQuery(context["config"].model, int(m["image_dim"]), int(m["levels"]))
    )


def load_index(path: str | Path, manifest: dict | None = None) -> LoadedIndex:
    """Open an index folder written by :func:`build_index` (checks format and version)."""
    path = Path(path)
    fix = REBUILD
    if manifest is None:
        manifest = read_model_manifest(path, FORMAT, VERSION)
    L = int(manifest["levels"])
    points = [
        torch.from_numpy(read_npy(path / f"points_{lv}.npy", "entity points", fix))
        for lv in range(L)
    ]
    ptr = [
        torch.from_numpy(read_npy(path / f"ptr_{lv}.npy", "children offsets", fix))
        for lv in range(L - 1)
    ]
    child = [
        torch.from_numpy(read_npy(path / f"child_{lv}.npy", "children lists", fix))
        for lv in range(L - 1)
    ]
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


def level_confidences(
    paths: torch.Tensor, scores: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``(B, k, L)``: per answer and level, the total ``softmax(scores / temperature)`` of the
    beam's paths through the same entity at that level (``−1`` paths have probability 0)."""
    p = torch.softmax(scores / temperature, dim=1).nan_to_num(0.0)  # (B, k)
    same = paths[:, :, None, :] == paths[:, None, :, :]  # (B, k, k, L)
    return (same * p[:, None, :, None]).sum(2)


def level_probabilities(
    index: EntityIndex, z: torch.Tensor, paths: torch.Tensor, temperatures: list[float]
) -> torch.Tensor:
    """``(B, k, L)``: per answer and level, the probability of its entity under the softmax of
    the query's scores against every entity of that level at ``temperatures[ℓ]`` (``−1``
    paths: 0). Queries in chunks, so that a chunk's scores stay near 256 MB."""
    q, extra = index.queries(z)
    out = torch.zeros(paths.shape, dtype=torch.float64)
    for lv, t in enumerate(temperatures):
        vec = index.vectors(lv)
        step = max(1, 2**25 // max(1, len(vec)))
        for s in range(0, len(q), step):
            e = None if extra is None else extra[s : s + step, None]
            scores = index.scores(q[s : s + step] @ vec.T, e)
            out[s : s + step, :, lv] = entity_probability(scores, paths[s : s + step, :, lv], t)
    return out


def entity_probability(scores: torch.Tensor, rows: torch.Tensor, t: float) -> torch.Tensor:
    """``(B, k)``: the probability of entity ``rows`` under ``softmax(scores / t)`` over a
    level's every entity (``scores (B, E)``; row ``−1``: 0)."""
    rows = rows.long()
    p = torch.log_softmax(scores / t, dim=1).gather(1, rows.clamp(min=0)).exp()
    return torch.where(rows >= 0, p, torch.zeros_like(p))


class Geolocator(BaseLocator):
    """A loaded HierLoc model folder; the image side runs on ``device`` (CPU or CUDA), the
    beam search on the CPU."""

    def __init__(self, loaded, device: str = "cpu") -> None:
        self._loaded = loaded
        self.manifest = loaded.manifest
        self.index = loaded.index
        self.device = torch.device(device)
        self.query = loaded.query.to(self.device)
        self.context = (
            None if loaded.context is None else [c.to(self.device) for c in loaded.context]
        )
        self.names = EntityNames(loaded.entities)
        self._encoder = None

    family = "hierloc"

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", manifest: dict | None = None
    ) -> Geolocator:
        return cls(load_index(path, manifest), device)

    def _counts(self) -> dict:
        m = self.manifest
        return {
            "entities": dict(zip(LEVEL_NAMES, m["counts"], strict=False)),
            "manifold": m["manifold"],
            "dtype": m["dtype"],
            "calibrated": bool(m.get("calibration")),
        }

    @property
    def raw_temperature(self) -> float:
        """``τ``, the temperature learned with the loss."""
        return float(self.manifest.get("tau", 1.0))

    def level_temperatures(self) -> list[float] | None:
        """``τ·T_ℓ`` per level when the folder is calibrated, else None."""
        cal = self.manifest.get("calibration")
        if not cal:
            return None
        if cal.get("method") != "temperature":
            raise InputError(
                f"{self.manifest.get('path', 'this model folder')}: confidence calibration "
                f"{cal.get('method')!r} is not one this version reads; rebuild the folder with "
                "hierloc index"
            )
        names = LEVEL_NAMES[: len(self.index.points)]
        return [self.raw_temperature * cal["levels"][n]["temperature"] for n in names]

    # -- features → answers -------------------------------------------------------------
    @torch.no_grad()
    def embed(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Image features ``(B, D)`` → points ``(B, d+1)`` on the model's manifold."""
        x = torch.from_numpy(self.check_features(features))
        out = []
        for s in range(0, len(x), 1024):
            z = self.query.image_embeddings(x[s : s + 1024].to(self.device), context=self.context)
            out.append(z.float().cpu())  # the search runs on the CPU
        return torch.cat(out) if out else torch.zeros(0, self.index.points[0].shape[1])

    def search(self, features, top_k: int = 5, beam: int = 10):
        return self._beam(self.embed(features), top_k, beam)

    def _beam(self, z: torch.Tensor, top_k: int, beam: int):
        if top_k < 1 or beam < 1:
            raise InputError("--top-k and --beam must be >= 1")
        return beam_search(self.index, z, width=max(beam, top_k))

    def predict_features(
        self, features, *, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
    ) -> list[Prediction]:
        if search == "flat":
            return self._predict_flat(features, ids, top_k)
        if search != "beam":
            raise InputError(f"search must be 'beam' or 'flat', got {search!r}")
        z = self.embed(features)
        res = self._beam(z, top_k, beam)
        n = res.paths.shape[0]
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        scores = res.scores
        temps = self.level_temperatures()
        if temps is None:
            conf = level_confidences(res.paths, scores, self.raw_temperature)
        else:
            conf = level_probabilities(self.index, z, res.paths, temps)
        out = []
        for b in range(n):
            answers = []
            for j in range(min(top_k, res.paths.shape[1])):
                path = res.paths[b, j].tolist()
                if min(path) < 0:
                    break
                c = conf[b, j].tolist()
                answers.append(
                    self.names.answer(path, float(scores[b, j]), c[-1], level_confidence=c)
                )
            out.append(Prediction(ids[b], answers))
        return out

    def _predict_flat(self, features, ids, top_k: int) -> list[Prediction]:
        """Each level's ``top_k`` nearest entities independently; answer ``j`` takes the
        ``j``-th of every level (paths need not be consistent: no hierarchy)."""
        per_level = flat_search(self.index, self.embed(features), k=top_k)
        n = per_level[0].paths.shape[0]
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        k = min(r.paths.shape[1] for r in per_level)
        out = []
        for b in range(n):
            answers = []
            for j in range(k):
                path = [int(r.paths[b, j, 0]) for r in per_level]
                score = float(sum(r.scores[b, j] for r in per_level))
                answers.append(self.names.answer(path, score, float("nan")))
            out.append(Prediction(ids[b], answers))
        return out


CALIBRATION_IMAGES = 5000
TEMPERATURE_GRID = np.exp(np.linspace(np.log(0.05), np.log(400.0), 181))


def calibrate(model_dir: str | Path, val: str | Path, features: str | Path, beam: int = 10) -> dict:
    """Calibrate a model folder's confidences on a labelled validation split: per level, the
    temperature factor ``T_ℓ`` (on a log grid from 0.05 to 400) that maximises the Bernoulli
    likelihood of the top answer being right at that level, its confidence being its entity's
    probability under the softmax over every entity of the level at ``τ·T_ℓ`` (the module
    doc); at most ``CALIBRATION_IMAGES`` validation images (a seeded sample). Written into
    ``manifest.json`` as ``calibration``; returns it."""
    geo = Geolocator.load(model_dir)
    truth = metadata_entities(val)
    feats, ok = FeatureStore.open(features).lookup(truth["id"].to_numpy(dtype=object))
    truth = truth[ok].reset_index(drop=True)
    if not len(truth):
        raise InputError(f"{val}: none of its images are in {features}; cannot calibrate")
    if len(truth) > CALIBRATION_IMAGES:  # a seeded sample bounds the (images × entities) pass
        keep = np.sort(np.random.default_rng(0).choice(len(truth), CALIBRATION_IMAGES, False))
        truth, feats = truth.iloc[keep].reset_index(drop=True), feats[keep]
    z = geo.embed(feats)
    res = beam_search(geo.index, z, width=beam)
    q, extra = geo.index.queries(z)
    ent = geo._loaded.entities
    levels = {}
    for lv, name in enumerate(LEVEL_NAMES[: res.paths.shape[2]]):
        sub = ent[ent["level"] == lv]
        pos = dict(zip(sub["entity_id"], sub["row"], strict=True))
        true = truth[f"{name}_id"].map(pos).fillna(-1).astype(np.int64).to_numpy()
        chosen = res.paths[:, 0, lv].long()
        right = (chosen.numpy() == true).astype(np.float64)
        scores = geo.index.scores(
            q @ geo.index.vectors(lv).T, None if extra is None else extra[:, None]
        )
        mine = scores.gather(1, chosen[:, None]).squeeze(1)

        def nll(t: float, scores=scores, mine=mine, right=right) -> float:
            tau = geo.raw_temperature * t
            logp = (mine / tau - torch.logsumexp(scores / tau, dim=1)).numpy()
            log_wrong = np.log(-np.expm1(np.minimum(logp, -1e-12)))
            return float(-(right * logp + (1 - right) * log_wrong).mean())

        t = float(min(TEMPERATURE_GRID, key=nll))
        levels[name] = {"temperature": t, "accuracy": float(right.mean())}
    calibration = {
        "val": str(Path(val).resolve()),
        "images": len(truth),
        "beam": beam,
        "method": "temperature",
        "levels": levels,
    }
    manifest = dict(geo.manifest) | {"calibration": calibration}
    write_file_atomic(Path(model_dir) / "manifest.json", json.dumps(manifest, indent=2) + "\n")
    return calibration
