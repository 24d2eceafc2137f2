"""Fitting the baselines and writing their model folders (:mod:`hierloc.locate.baselines`
describes them and reads the folders): the arrays and weights each one's folder holds, from a
hierarchy's training images, on the shared config system (``baseline:`` section,
:class:`hierloc.config.BaselineConfig`) and the shared learning-rate schedule."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file

from hierloc.config import BASELINES, BaselineConfig
from hierloc.data.features import FeatureStore
from hierloc.data.formats import MODEL_FOLDER_KINDS
from hierloc.data.manifests import encoder_description
from hierloc.data.writers import check_folder_output, staged_folder
from hierloc.errors import InputError
from hierloc.geo.haversine import km_from_chord, unit_vectors
from hierloc.hierarchy.io import entity_frame, load_entities
from hierloc.models.baselines import FORMAT, VERSION, baseline_mlp, unit_rows
from hierloc.train.data import load_training_data
from hierloc.train.loop import lr_factor
from hierloc.train.runtime import tune_allocator

log = logging.getLogger(__name__)
MEDOID_SAMPLE = 5000


@dataclass
class FittedBaseline:
    """What a baseline's folder is written from."""

    name: str
    config: BaselineConfig
    arrays: dict[str, np.ndarray]
    weights: dict[str, torch.Tensor] | None
    ids: list[np.ndarray]  # entity ids per level
    entities: pd.DataFrame  # the hierarchy's entities frame
    image_dim: int


def geographic_medoid(coords: np.ndarray, seed: int = 0) -> int:
    """Row of ``coords`` ``(N, 2)`` (degrees) whose summed great-circle distance to the others
    (to a seeded sample of :data:`MEDOID_SAMPLE` of them when N is larger) is least."""
    xyz = unit_vectors(coords[:, 0], coords[:, 1])
    ref = xyz
    if len(xyz) > MEDOID_SAMPLE:
        pick = np.random.default_rng(seed).choice(len(xyz), MEDOID_SAMPLE, replace=False)
        ref = xyz[np.sort(pick)]
    total = np.empty(len(xyz))
    for s in range(0, len(xyz), 1024):
        chord = np.sqrt(np.clip(2 - 2 * (xyz[s : s + 1024] @ ref.T), 0, 4))
        total[s : s + 1024] = km_from_chord(chord).sum(axis=1)
    return int(np.argmin(total))


def _fit(model, x: torch.Tensor, target: torch.Tensor, loss_fn, cfg: BaselineConfig, desc: str):
    """AdamW on shuffled batches, the cosine schedule of :func:`hierloc.train.loop.lr_factor`
    (no warm-up), one permutation per epoch."""
    tune_allocator()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    steps = max(1, len(x) // cfg.batch_size)
    total = cfg.epochs * steps
    model.train()
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(x), generator=g)
        for s in range(steps):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            k = epoch * steps + s
            for group in opt.param_groups:
                group["lr"] = cfg.lr * lr_factor("cosine", k, total)
            loss = loss_fn(model(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log.info("%s epoch %d/%d: loss %.4f", desc, epoch + 1, cfg.epochs, float(loss.detach()))
    model.eval()
    return model


def fit_baseline(
    name: str, hierarchy: str | Path, features: str | Path, cfg: BaselineConfig
) -> FittedBaseline:
    """Fit (or set up) baseline ``name`` on the hierarchy's training images."""
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {BASELINES} or hierloc")
    torch.manual_seed(cfg.seed)
    data = load_training_data(hierarchy, features)
    tables, ids, frame = load_entities(hierarchy)
    x = data.train.features
    city = data.train.targets[:, -1]
    arrays: dict[str, np.ndarray] = {}
    weights = None
    if name == "knn":
        arrays["gallery"] = unit_rows(x.numpy()).astype(np.float16)
        arrays["gallery_city"] = city.numpy().astype(np.int64)
        arrays["gallery_coords"] = data.train.coords.numpy()
    elif name == "zeroshot":
        mean = tables.image_mean[-1]
        if mean is None:
            raise InputError(
                f"{hierarchy}: zeroshot needs mean image embeddings (build the "
                "hierarchy with --features)"
            )
        arrays["city_mean"] = unit_rows(np.asarray(mean, np.float32)).astype(np.float16)
    elif name == "prior":
        medoid = geographic_medoid(data.train.coords.numpy(), cfg.seed)
        row = int(city[medoid])
        arrays["prior_coords"] = data.train.coords.numpy()[medoid : medoid + 1].astype(np.float64)
        arrays["prior_city"] = np.array([row], np.int64)
        arrays["prior_share"] = np.array([float((city == row).float().mean())], np.float64)
    elif name == "classify":
        model = baseline_mlp(x.shape[1], len(ids[-1]), cfg.hidden, cfg.dropout)
        _fit(model, x, city, torch.nn.functional.cross_entropy, cfg, "classify")
        weights = model.state_dict()
    else:  # regress
        xyz = unit_vectors(data.train.coords[:, 0], data.train.coords[:, 1]).float()
        model = baseline_mlp(x.shape[1], 3, cfg.hidden, cfg.dropout)
        loss = lambda p, t: ((unit_rows(p) - t) ** 2).sum(1).mean()  # noqa: E731
        _fit(model, x, xyz, loss, cfg, "regress")
        weights = model.state_dict()
    return FittedBaseline(name, cfg, arrays, weights, ids, frame, int(x.shape[1]))


def write_baseline_folder(
    fitted, output: str | Path, hierarchy: str | Path, features: str | Path, overwrite: bool
) -> Path:
    """A baseline's model folder from its fit (:class:`hierloc.train.baselines.FittedBaseline`):
    the entity table, its arrays, its weights and the manifest, written staged."""
    store = FeatureStore.open(features)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": fitted.name,
        "image_dim": fitted.image_dim,
        "config": dataclasses.asdict(fitted.config),
        "cities": len(fitted.ids[-1]),
        "encoder": encoder_description(store.manifest.get("encoder")),
        "features": str(Path(features).resolve()),
        "hierarchy": str(Path(hierarchy).resolve()),
    }
    output = Path(output)
    with staged_folder(output, overwrite, MODEL_FOLDER_KINDS, [hierarchy, features]) as tmp:
        entity_frame(fitted.ids, fitted.entities).to_parquet(tmp / "entities.parquet", index=False)
        for key, arr in fitted.arrays.items():
            np.save(tmp / f"{key}.npy", arr)
        if fitted.weights is not None:
            tensors = {k: v.contiguous() for k, v in fitted.weights.items()}
            save_file(tensors, str(tmp / "model.safetensors"))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return output


def train_baseline(
    name: str,
    cfg,
    hierarchy: str | Path,
    features: str | Path,
    output: str | Path,
    overwrite: bool = False,
) -> Path:
    """Fit baseline ``name`` under ``cfg`` (:class:`hierloc.config.BaselineTrainConfig`) and
    write its model folder (the output is checked before the fit)."""
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, [hierarchy, features])
    fitted = fit_baseline(name, hierarchy, features, cfg.baseline)
    return write_baseline_folder(fitted, output, hierarchy, features, overwrite)
