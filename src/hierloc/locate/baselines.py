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
import logging
from pathlib import Path

import torch

from hierloc.checks import ConfigValueError
from hierloc.config import BASELINES, BaselineConfig
from hierloc.data.artifacts import read_npy, read_parquet, read_safetensors
from hierloc.data.manifests import read_model_manifest
from hierloc.data.spec import Array, Spec, Table, Weights, module_shapes
from hierloc.errors import InputError
from hierloc.geo.haversine import unit_vectors
from hierloc.hierarchy.io import ENTITY_FRAME_COLUMNS
from hierloc.locate.base import BaseLocator, EntityNames
from hierloc.locate.types import Prediction
from hierloc.models.baselines import FORMAT, VERSION, baseline_mlp, unit_rows

log = logging.getLogger(__name__)
__all__ = ["BASELINES", "FORMAT", "VERSION", "BaselineLocator", "folder_spec"]
REFIT = "train the baseline again into a new folder (hierloc train --model …)"


def _topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    return scores.topk(min(k, scores.shape[1]), dim=1)


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
    return module_shapes(lambda: baseline_mlp(int(m["image_dim"]), out, cfg.hidden, cfg.dropout))


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
            self._model = baseline_mlp(self.image_dim, out, self.cfg.hidden, self.cfg.dropout)
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
        self, features, *, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
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
            score, nn_idx = _topk(unit_rows(x) @ self._arrays["gallery"].T, top_k)
            rows = self._arrays["gallery_city"][nn_idx]
            coords = self._arrays["gallery_coords"][nn_idx]
            conf = torch.softmax(score / self.cfg.temperature, dim=1)
        elif self.kind == "zeroshot":
            score, rows = _topk(unit_rows(x) @ self._arrays["city_mean"].T, top_k)
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
            p = unit_rows(self._model(x)).double()
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
