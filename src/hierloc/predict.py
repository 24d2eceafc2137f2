"""Prediction: ``Geolocator.load(MODEL_DIR).predict(images_or_features, top_k=5)``.

A model folder (``hierloc index``) holds the final entity points, the children lists, the
entity names and coordinates, and the image side of the model, so prediction needs nothing
else. Per image the answer is the best ``top_k`` paths of a beam search (width ``beam``):
country / region / subregion / city names, the city's mean coordinates, the path score and a
confidence.

Confidence, per level: the raw confidence of an answer's entity is the total
``softmax(scores / τ)`` (``τ`` the temperature learned with the loss) of the beam's paths through
that entity (a country shared by several paths gets their sum). When the model folder was
calibrated on a validation split (:func:`hierloc.index.calibrate`, done by ``hierloc index`` when
the run had one), each level's raw confidence is mapped to the share of validation images with
that raw confidence whose answer was right at that level (histogram binning), i.e. an estimate
of the probability of being right. ``confidence`` is the finest level's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hierloc.errors import InputError
from hierloc.hierarchy.build import LEVEL_NAMES

log = logging.getLogger(__name__)


@dataclass
class Place:
    level: str
    entity_id: str
    name: str
    latitude: float
    longitude: float


@dataclass
class Answer:
    places: list[Place]  # coarse → fine
    latitude: float  # the finest entity's mean coordinates
    longitude: float
    score: float  # path score (sum over levels of −distance)
    confidence: float  # of the finest level (see the module doc)
    level_confidence: dict[str, float] = field(default_factory=dict)

    def names(self) -> dict[str, str]:
        return {p.level: p.name for p in self.places}


@dataclass
class Prediction:
    id: str
    answers: list[Answer] = field(default_factory=list)

    @property
    def best(self) -> Answer:
        return self.answers[0]


@dataclass
class Rejected:
    id: str
    reason: str


def level_confidences(paths: torch.Tensor, scores: torch.Tensor,
                      temperature: float) -> torch.Tensor:  # fmt: skip
    """``(B, k, L)``: per answer and level, the total ``softmax(scores / temperature)`` of the
    beam's paths through the same entity at that level (``−1`` paths have probability 0)."""
    p = torch.softmax(scores / temperature, dim=1).nan_to_num(0.0)  # (B, k)
    same = paths[:, :, None, :] == paths[:, None, :, :]  # (B, k, k, L)
    return (same * p[:, None, :, None]).sum(2)


class EntityNames:
    """Names, ids, coordinates and parents of a model folder's entities, by level and row."""

    def __init__(self, entities) -> None:
        self.levels = []
        for lv in sorted(entities["level"].unique()):
            sub = entities[entities["level"] == lv].sort_values("row")
            self.levels.append((sub["entity_id"].to_numpy(dtype=object),
                                sub["name"].to_numpy(dtype=object),
                                sub[["latitude", "longitude"]].to_numpy(np.float64),
                                sub["parent_row"].to_numpy(np.int64)))  # fmt: skip

    def path_of(self, row: int) -> list[int]:
        """Rows from the top level down to finest-level entity ``row``."""
        path = [int(row)]
        for lv in range(len(self.levels) - 1, 0, -1):
            path.insert(0, int(self.levels[lv][3][path[0]]))
        return path

    def answer(self, path: list[int], score: float, confidence: float,
               coords: tuple[float, float] | None = None,
               level_confidence: list[float] | None = None) -> Answer:  # fmt: skip
        """An answer for entity rows ``path`` (coarse → fine); its location is the finest
        entity's mean coordinates unless ``coords`` are given."""
        places = []
        for lv, row in enumerate(path):
            eid, name, xy, _ = self.levels[lv]
            places.append(Place(LEVEL_NAMES[lv] if lv < 4 else f"level{lv}", str(eid[row]),
                                str(name[row]), float(xy[row, 0]), float(xy[row, 1])))  # fmt: skip
        lat, lon = coords if coords is not None else (places[-1].latitude, places[-1].longitude)
        levels = {} if level_confidence is None else {
            p.level: float(c) for p, c in zip(places, level_confidence, strict=True)}  # fmt: skip
        return Answer(places, float(lat), float(lon), float(score), float(confidence), levels)


class Predictor:
    """What every model folder answers: :meth:`predict_features` (subclasses), and
    :meth:`predict` on features, feature stores or images. Subclasses set ``manifest``
    (with ``image_dim`` and ``encoder``) and ``_encoder = None``."""

    manifest: dict
    _encoder = None

    @property
    def image_dim(self) -> int:
        return int(self.manifest["image_dim"])

    def check_features(self, features) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.image_dim:
            raise InputError(
                f"features have shape {tuple(x.shape)} but this model takes (N, {self.image_dim}) "
                f"features from encoder {self.encoder_name!r}; extract them with that encoder"
            )
        if not np.isfinite(x).all():
            raise InputError("features contain NaN or infinite values")
        return x

    def predict_features(self, features, ids=None, top_k: int = 5, beam: int = 10,
                         search: str = "beam") -> list[Prediction]:  # fmt: skip
        """Top-``top_k`` answers per row of ``features`` (``search``: ``beam`` or, for
        HierLoc, ``flat``: each level's nearest entity independently — Table 8's baseline)."""
        raise NotImplementedError

    def inputs_for(self, ids: np.ndarray, features: str | Path | None = None,
                   semantic: str | Path | None = None):  # fmt: skip
        """``(inputs of the ids found, found mask)`` from a feature store (default: the one the
        model was trained on), what :meth:`predict_features` takes."""
        from hierloc.eval.evaluate import features_for

        store = features or self.manifest.get("features")
        if not store:
            raise InputError("this model folder names no feature store; pass --features")
        return features_for(store, np.asarray(ids, dtype=object))

    @property
    def encoder_name(self) -> str | None:
        enc = self.manifest.get("encoder")
        return enc.get("name") if isinstance(enc, dict) else None

    def encode_images(self, sources: list[Path], batch_size: int = 32):
        """Images (files, folders, archives, a metadata file with a path column) → ``(ids,
        features, rejected)`` with the encoder the model was trained on."""
        from hierloc.data.extract import ImageDataset
        from hierloc.data.images import collect_items
        from hierloc.encoders import create_image_encoder

        name = self.encoder_name
        if name is None:
            raise InputError(
                "this model folder does not name its image encoder (trained on features of "
                "unknown origin); pass a feature store or features"
            )
        if self._encoder is None:
            self._encoder = create_image_encoder(name).eval()
        enc = self._encoder
        items = collect_items(list(sources))
        ds = ImageDataset(items, enc.preprocess)
        ids, feats, rejected = [], [], []
        try:
            for s in range(0, len(items), batch_size):
                batch = [ds[i] for i in range(s, min(len(items), s + batch_size))]
                good = [(i, t) for i, t, reason in batch if not reason]
                rejected += [Rejected(items[i].id, reason) for i, _, reason in batch if reason]
                if good:
                    with torch.no_grad():
                        f = enc(torch.stack([t for _, t in good]))
                    feats.append(f.float().numpy())
                    ids += [items[i].id for i, _ in good]
        finally:
            ds.close()
        features = np.concatenate(feats) if feats else np.zeros((0, self.image_dim), np.float32)
        return ids, features, rejected

    def predict(self, inputs, top_k: int = 5, beam: int = 10,
                ids=None) -> tuple[list[Prediction], list[Rejected]]:  # fmt: skip
        """Predictions for features ``(N, D)`` (array or tensor), a feature store folder, or
        image sources (paths). Returns ``(predictions, rejected inputs with their reason)``."""
        if isinstance(inputs, np.ndarray | torch.Tensor):
            return self.predict_features(inputs, ids, top_k, beam), []
        sources = [Path(p) for p in ([inputs] if isinstance(inputs, str | Path) else inputs)]
        if len(sources) == 1 and (sources[0] / "features.npy").exists():
            from hierloc.data.features import FeatureStore

            store = FeatureStore.open(sources[0])
            from hierloc.index import encoder_description

            store_enc = (encoder_description(store.manifest.get("encoder")) or {}).get("name")
            if self.encoder_name and store_enc and store_enc != self.encoder_name:
                raise InputError(f"{sources[0]}: features by {store_enc!r} but this model was "
                                 f"trained on {self.encoder_name!r} features")  # fmt: skip
            feats = np.asarray(store.features, dtype=np.float32)
            return self.predict_features(feats, list(store.ids.to_pylist()), top_k, beam), []
        got_ids, feats, rejected = self.encode_images(sources)
        return self.predict_features(feats, got_ids, top_k, beam), rejected


class Geolocator(Predictor):
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

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Geolocator:
        from hierloc.index import load_index

        return cls(load_index(path), device)

    @property
    def raw_temperature(self) -> float:
        """``τ``, the temperature learned with the loss."""
        return float(self.manifest.get("tau", 1.0))

    def calibrated(self, conf: torch.Tensor) -> torch.Tensor:
        """Per-level raw confidences ``(…, L)`` → calibrated (unchanged when uncalibrated)."""
        cal = self.manifest.get("calibration")
        if not cal:
            return conf
        out = conf.clone()
        for lv, name in enumerate(LEVEL_NAMES[: conf.shape[-1]]):
            table = cal["levels"].get(name)
            if table is None:
                continue
            which = np.searchsorted(np.asarray(table["edges"]), conf[..., lv].numpy(), "right")
            out[..., lv] = torch.from_numpy(np.asarray(table["values"])[which])
        return out

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
        from hierloc.search import beam_search

        if top_k < 1 or beam < 1:
            raise InputError("--top-k and --beam must be >= 1")
        return beam_search(self.index, self.embed(features), width=max(beam, top_k))

    def predict_features(self, features, ids=None, top_k: int = 5, beam: int = 10,
                         search: str = "beam") -> list[Prediction]:  # fmt: skip
        if search == "flat":
            return self._predict_flat(features, ids, top_k)
        if search != "beam":
            raise InputError(f"search must be 'beam' or 'flat', got {search!r}")
        res = self.search(features, top_k, beam)
        n = res.paths.shape[0]
        ids = [str(i) for i in range(n)] if ids is None else [str(i) for i in ids]
        scores = res.scores
        conf = self.calibrated(level_confidences(res.paths, scores, self.raw_temperature))
        out = []
        for b in range(n):
            answers = []
            for j in range(min(top_k, res.paths.shape[1])):
                path = res.paths[b, j].tolist()
                if min(path) < 0:
                    break
                c = conf[b, j].tolist()
                answers.append(self.names.answer(path, float(scores[b, j]), c[-1],
                                                 level_confidence=c))  # fmt: skip
            out.append(Prediction(ids[b], answers))
        return out

    def _predict_flat(self, features, ids, top_k: int) -> list[Prediction]:
        """Each level's ``top_k`` nearest entities independently; answer ``j`` takes the
        ``j``-th of every level (paths need not be consistent: no hierarchy)."""
        from hierloc.search import flat_search

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
