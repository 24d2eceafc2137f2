"""Baselines on the same features, split and metrics as HierLoc (paper Tables 1 and 7):

* ``knn`` — image retrieval: the nearest training image by cosine similarity of the frozen
  features (the paper's "SC Retrieval" idea; exact, a chunked matmul + top-k — what a FAISS
  ``IndexFlatIP`` computes); its location and labels are the answer.
* ``classify`` — softmax over the city entities (a 2-layer MLP); the location is the predicted
  city's mean coordinates.
* ``regress`` — regression to coordinates (a 2-layer MLP onto the unit sphere, loss = squared
  chord between predicted and true unit vectors, monotone in the great-circle distance); the
  names are those of the city entity nearest to the predicted point.
* ``zeroshot`` — no training: the city whose mean image embedding (the hierarchy's) is the most
  similar (cosine) to the image's features (Table 7's first row).
* ``prior`` — learns nothing from the image: every photo gets the same answer, the training
  set's geographic medoid (the training location with the least summed great-circle distance
  to the training locations; to a seeded sample of 5,000 of them when there are more) with
  its city's labels, confidence the share of training images in that city. What a model
  scores above it is what it read from the pixels.

Each writes a model folder (``manifest.json`` with ``format: hierloc-baseline``,
``entities.parquet`` like an index's, and its arrays), which ``hierloc predict``, ``evaluate``
and ``compare`` read like a HierLoc model folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import save_file

from hierloc.checks import ConfigValueError, integer, number
from hierloc.data.artifacts import read_npy, read_parquet, read_safetensors
from hierloc.data.features import FeatureStore
from hierloc.data.manifests import encoder_description, read_model_manifest
from hierloc.data.spec import Array, Spec, Table, Weights, module_shapes
from hierloc.data.writers import MODEL_FOLDER_KINDS, check_folder_output, staged_folder
from hierloc.errors import InputError
from hierloc.geo.haversine import km_from_chord, unit_vectors
from hierloc.hierarchy.io import ENTITY_FRAME_COLUMNS, entity_frame
from hierloc.locate.base import BaseLocator, EntityNames
from hierloc.locate.types import Prediction
from hierloc.train.data import load_entities, load_training_data
from hierloc.train.runtime import tune_allocator

log = logging.getLogger(__name__)
BASELINES = ("knn", "classify", "regress", "zeroshot", "prior")
MEDOID_SAMPLE = 5000
FORMAT = "hierloc-baseline"
VERSION = 1
REFIT = "train the baseline again into a new folder (hierloc train --model …)"


@dataclass(frozen=True)
class BaselineConfig:
    epochs: int = 15
    lr: float = 1e-3
    weight_decay: float = 1e-4
    hidden: int = 512
    dropout: float = 0.1
    batch_size: int = 256
    seed: int = 0
    temperature: float = 0.05  # cosine-similarity softmax for knn / zeroshot confidences

    def __post_init__(self) -> None:
        for key in ("epochs", "hidden", "batch_size"):
            integer(key, getattr(self, key), 1)
        integer("seed", self.seed, 0)
        number("lr", self.lr, 0, low_open=True)
        number("weight_decay", self.weight_decay, 0)
        number("dropout", self.dropout, 0, 1, high_open=True)
        number("temperature", self.temperature, 0, low_open=True)


def baseline_config(overrides: list[str] | None, path: str | Path | None = None) -> BaselineConfig:
    """:class:`BaselineConfig` from a YAML file's ``baseline:`` section (``path``), then
    ``KEY=VALUE`` overrides (unknown keys rejected)."""
    cfg = BaselineConfig()
    fields = {f.name: f.type for f in dataclasses.fields(BaselineConfig)}
    from_file = []
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"{path}: cannot read the config ({' '.join(str(e).split())})") from e
        if not isinstance(data, dict) or set(data) - {"baseline"}:
            got = sorted(data) if isinstance(data, dict) else repr(data)
            raise InputError(
                f"{path}: a baseline's config holds one section, baseline: (keys "
                f"{', '.join(sorted(fields))}), not {got}"
            )
        section = data.get("baseline") or {}
        if not isinstance(section, dict):
            raise InputError(f"{path}: baseline: must be a mapping of keys, got {section!r}")
        from_file = [f"{k}={v!r}" for k, v in section.items()]
    for item in [*from_file, *(overrides or [])]:
        key, _, raw = item.partition("=")
        key = key.strip().removeprefix("baseline.")
        if key not in fields or not _:
            raise InputError(
                f"baseline override {item!r}: use KEY=VALUE with KEY one of {sorted(fields)}"
            )
        value = yaml.safe_load(raw)
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        want = "an integer" if fields[key] == "int" else "a finite number"
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value) and (fields[key] == "float" or value == int(value))
        if not ok:
            raise InputError(f"baseline override {item!r}: not {want}")
        value = float(value) if fields[key] == "float" else int(value)
        try:
            cfg = dataclasses.replace(cfg, **{key: value})
        except ConfigValueError as e:
            raise InputError(f"baseline override {e}") from None
    return cfg


def _mlp(d_in: int, d_out: int, cfg: BaselineConfig) -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(d_in, cfg.hidden),
        nn.GELU(),
        nn.Dropout(cfg.dropout),
        nn.Linear(cfg.hidden, d_out),
    )


def _unit(x: np.ndarray | torch.Tensor):
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.topk(min(k, scores.shape[1]), dim=1)


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
            for group in opt.param_groups:  # cosine decay
                group["lr"] = cfg.lr * 0.5 * (1 + np.cos(np.pi * k / total))
            loss = loss_fn(model(x[idx]), target[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        log.info("%s epoch %d/%d: loss %.4f", desc, epoch + 1, cfg.epochs, float(loss.detach()))
    model.eval()
    return model


def train_baseline(
    name: str,
    hierarchy: str | Path,
    features: str | Path,
    output: str | Path,
    overrides: list[str] | None = None,
    overwrite: bool = False,
    config: str | Path | None = None,
) -> Path:
    """Train (or set up) baseline ``name`` on the hierarchy's training images; write its folder.
    ``config``: a YAML file with a ``baseline:`` section, under ``overrides``."""
    if name not in BASELINES:
        raise InputError(f"unknown baseline {name!r}; choose one of {BASELINES} or hierloc")
    cfg = baseline_config(overrides, config)
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, [hierarchy, features])
    torch.manual_seed(cfg.seed)
    data = load_training_data(hierarchy, features)
    tables, ids, frame = load_entities(hierarchy)
    x = data.train.features
    city = data.train.targets[:, -1]
    arrays: dict[str, np.ndarray] = {}
    weights = None
    if name == "knn":
        arrays["gallery"] = _unit(x.numpy()).astype(np.float16)
        arrays["gallery_city"] = city.numpy().astype(np.int64)
        arrays["gallery_coords"] = data.train.coords.numpy()
    elif name == "zeroshot":
        mean = tables.image_mean[-1]
        if mean is None:
            raise InputError(
                f"{hierarchy}: zeroshot needs mean image embeddings (build the "
                "hierarchy with --features)"
            )
        arrays["city_mean"] = _unit(np.asarray(mean, np.float32)).astype(np.float16)
    elif name == "prior":
        medoid = geographic_medoid(data.train.coords.numpy(), cfg.seed)
        row = int(city[medoid])
        arrays["prior_coords"] = data.train.coords.numpy()[medoid : medoid + 1].astype(np.float64)
        arrays["prior_city"] = np.array([row], np.int64)
        arrays["prior_share"] = np.array([float((city == row).float().mean())], np.float64)
    elif name == "classify":
        model = _mlp(x.shape[1], len(ids[-1]), cfg)
        _fit(model, x, city, torch.nn.functional.cross_entropy, cfg, "classify")
        weights = model.state_dict()
    else:  # regress
        xyz = unit_vectors(data.train.coords[:, 0], data.train.coords[:, 1]).float()
        model = _mlp(x.shape[1], 3, cfg)
        _fit(model, x, xyz, lambda p, t: ((_unit(p) - t) ** 2).sum(1).mean(), cfg, "regress")
        weights = model.state_dict()
    store = FeatureStore.open(features)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "image_dim": int(x.shape[1]),
        "config": dataclasses.asdict(cfg),
        "cities": len(ids[-1]),
        "encoder": encoder_description(store.manifest.get("encoder")),
        "features": str(Path(features).resolve()),
        "hierarchy": str(Path(hierarchy).resolve()),
    }
    output = Path(output)
    with staged_folder(output, overwrite, MODEL_FOLDER_KINDS, [hierarchy, features]) as tmp:
        entity_frame(ids, frame).to_parquet(tmp / "entities.parquet", index=False)
        for key, arr in arrays.items():
            np.save(tmp / f"{key}.npy", arr)
        if weights is not None:
            save_file(
                {k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors")
            )
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return output


def _config(path: Path, manifest: dict) -> BaselineConfig:
    """The manifest's ``config`` as a :class:`BaselineConfig` (one line when it is not one)."""
    cfg = manifest["config"]
    known = [f.name for f in dataclasses.fields(BaselineConfig)]
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise InputError(
            f"{path / 'manifest.json'}: config keys {unknown} are not baseline settings "
            f"({', '.join(known)}); {REFIT}"
        )
    try:
        return BaselineConfig(**cfg)
    except (InputError, ConfigValueError) as e:
        raise InputError(f"{path / 'manifest.json'}: config: {e}; {REFIT}") from e


def folder_spec() -> Spec:
    """What a baseline's model folder holds, per baseline (:mod:`hierloc.data.spec`)."""

    def files(m: dict) -> list:
        if m["model"] not in BASELINES:
            raise ValueError(f"baseline {m['model']!r} is none of {BASELINES}")
        out: list = [Table("entities.parquet", "entity table", ENTITY_FRAME_COLUMNS)]
        vectors = ("float16", "float32")
        if m["model"] == "knn":
            out += [
                Array("gallery.npy", "gallery of image features", vectors, ("N", "image_dim")),
                Array("gallery_city.npy", "gallery's city rows", ("int64",), ("N",), "cities"),
                Array("gallery_coords.npy", "gallery's coordinates", ("float32", "float64"),
                      ("N", 2)),
            ]  # fmt: skip
        elif m["model"] == "zeroshot":
            out.append(Array("city_mean.npy", "city embeddings", vectors, ("cities", "image_dim")))
        elif m["model"] == "prior":
            out += [
                Array("prior_coords.npy", "prior's coordinates", ("float64",), (1, 2)),
                Array("prior_city.npy", "prior's city row", ("int64",), (1,), "cities"),
                Array("prior_share.npy", "prior's share", ("float64",), (1,)),
            ]
        else:
            out.append(Weights("model.safetensors", f"{m['model']} weights", _mlp_shapes))
        return out

    def dims(m: dict) -> dict:
        return {"cities": int(m["cities"]), "image_dim": int(m["image_dim"])}

    return Spec(
        "baseline model folder",
        REFIT,
        {"model": str, "config": dict, "cities": int, "image_dim": int},
        files,
        dims,
        checks=[_check_cities],
    )


def _mlp_shapes(context: dict) -> dict:
    m = context["manifest"]
    cfg = _config(context["path"], m)
    out = m["cities"] if m["model"] == "classify" else 3
    return module_shapes(lambda: _mlp(int(m["image_dim"]), out, cfg))


def _check_cities(path: Path, context: dict) -> None:
    import pyarrow.parquet as pq

    level = pq.read_table(path / "entities.parquet", columns=["level"]).column(0).to_numpy()
    cities = int((level == level.max()).sum()) if len(level) else 0
    if cities != context["manifest"]["cities"]:
        raise InputError(
            f"{path / 'entities.parquet'}: {cities} cities, but manifest.json says "
            f"{context['manifest']['cities']}; {REFIT}"
        )
    _config(path, context["manifest"])


class BaselineLocator(BaseLocator):
    """A baseline's model folder (see the module doc), answering like a Geolocator."""

    def __init__(self, path: Path, manifest: dict) -> None:
        fix = REFIT
        self.path, self.manifest = path, manifest
        self.kind = manifest["model"]
        self.names = EntityNames(read_parquet(path / "entities.parquet", "entity table", fix))
        self.cfg = _config(path, manifest)
        self._encoder = None
        self._arrays = {
            p.stem: torch.from_numpy(read_npy(p, "baseline array", fix)) for p in path.glob("*.npy")
        }
        for key in ("gallery", "city_mean"):  # float16 on disk, float32 to compute
            if key in self._arrays:
                self._arrays[key] = self._arrays[key].float()
        self._model = None
        if self.kind in ("classify", "regress"):
            out = self.manifest["cities"] if self.kind == "classify" else 3
            self._model = _mlp(self.image_dim, out, self.cfg)
            weights = read_safetensors(path / "model.safetensors", "baseline weights", fix)
            self._model.load_state_dict(weights)
            self._model.eval()
        city_xy = self.names.levels[-1][2]
        self._city_xyz = torch.from_numpy(unit_vectors(city_xy[:, 0], city_xy[:, 1]))

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", manifest: dict | None = None
    ) -> BaselineLocator:
        """``device`` is accepted for the common interface; baselines run on the CPU."""
        path = Path(path)
        manifest = manifest or read_model_manifest(path, FORMAT, VERSION, REFIT)
        if manifest.get("model") not in BASELINES:
            raise InputError(
                f"{path}: baseline {manifest.get('model')!r} is none of {BASELINES}; {REFIT}"
            )
        return cls(path, manifest)

    @property
    def family(self) -> str:
        return self.kind

    def _counts(self) -> dict:
        return {"cities": int(self.manifest["cities"])}

    @torch.no_grad()
    def predict_features(
        self, features, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
    ) -> list[Prediction]:
        x = torch.from_numpy(self.check_features(features))
        n = len(x)
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        out = []
        for s in range(0, n, 512):
            out += self._predict_chunk(x[s : s + 512], ids[s : s + 512], top_k)
        return out

    def _predict_chunk(self, x: torch.Tensor, ids: list[str], top_k: int) -> list[Prediction]:
        coords = None  # (B, k, 2) answer locations when not the cities' mean coordinates
        if self.kind == "knn":
            score, nn_idx = _topk(_unit(x) @ self._arrays["gallery"].T, top_k)
            rows = self._arrays["gallery_city"][nn_idx]
            coords = self._arrays["gallery_coords"][nn_idx]
            conf = torch.softmax(score / self.cfg.temperature, dim=1)
        elif self.kind == "zeroshot":
            score, rows = _topk(_unit(x) @ self._arrays["city_mean"].T, top_k)
            conf = torch.softmax(score / self.cfg.temperature, dim=1)
        elif self.kind == "classify":
            logp = torch.log_softmax(self._model(x), dim=1)
            score, rows = _topk(logp, top_k)
            conf = score.exp()
        elif self.kind == "prior":  # one answer, the same for every image
            n = len(x)
            rows = self._arrays["prior_city"].reshape(1, 1).expand(n, 1)
            coords = self._arrays["prior_coords"].reshape(1, 1, 2).expand(n, 1, 2)
            score = torch.zeros(n, 1)
            conf = self._arrays["prior_share"].reshape(1, 1).expand(n, 1)
        else:  # regress: one answer, named after the nearest city entity
            p = _unit(self._model(x)).double()
            rows = (p @ self._city_xyz.T).argmax(dim=1, keepdim=True)
            lat = torch.rad2deg(torch.asin(p[:, 2].clamp(-1, 1)))
            lon = torch.rad2deg(torch.atan2(p[:, 1], p[:, 0]))
            coords = torch.stack([lat, lon], 1)[:, None, :]
            score = torch.zeros(len(x), 1)
            conf = torch.full((len(x), 1), float("nan"))
        preds = []
        for b, ident in enumerate(ids):
            answers = []
            for j in range(rows.shape[1]):
                xy = None if coords is None else tuple(coords[b, j].tolist())
                path = self.names.path_of(int(rows[b, j]))
                answers.append(self.names.answer(path, float(score[b, j]), float(conf[b, j]), xy))
            preds.append(Prediction(ident, answers))
        return preds
