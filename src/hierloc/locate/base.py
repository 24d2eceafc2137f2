"""What the families share: entity names by level and row, and the image → answer plumbing
(check features, encode images with the model's encoder, look inputs up in a store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hierloc.data.extract import ImageDataset
from hierloc.data.features import FeatureStore
from hierloc.data.images import Item, collect_items, decode
from hierloc.data.manifests import encoder_description
from hierloc.encoders import create_image_encoder
from hierloc.errors import InputError
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.locate.types import Answer, Place, Prediction, Rejected


def prepare_photos(locator, photos: list[tuple[str, bytes]], mapper=map):
    """``locator.prepare_photo`` over ``(id, bytes)`` photos (through ``mapper``, e.g. a thread
    pool's ``map``): ``(positions kept, their tensors, [(position, Rejected)])``."""
    kept, tensors, rejected = [], [], []
    prepared = mapper(lambda photo: locator.prepare_photo(photo[1]), photos)
    for k, ((ident, _), (tensor, reason)) in enumerate(zip(photos, prepared, strict=True)):
        if tensor is None:
            rejected.append((k, Rejected(ident, reason)))
        else:
            kept.append(k)
            tensors.append(tensor)
    return kept, tensors, rejected


class EntityNames:
    """Names, ids, coordinates and parents of a model folder's entities, by level and row."""

    def __init__(self, entities) -> None:
        self.levels = []
        for lv in sorted(entities["level"].unique()):
            sub = entities[entities["level"] == lv].sort_values("row")
            self.levels.append(
                (
                    sub["entity_id"].to_numpy(dtype=object),
                    sub["name"].to_numpy(dtype=object),
                    sub[["latitude", "longitude"]].to_numpy(np.float64),
                    sub["parent_row"].to_numpy(np.int64),
                )
            )

    def path_of(self, row: int) -> list[int]:
        """Rows from the top level down to finest-level entity ``row``."""
        path = [int(row)]
        for lv in range(len(self.levels) - 1, 0, -1):
            path.insert(0, int(self.levels[lv][3][path[0]]))
        return path

    def answer(
        self,
        path: list[int],
        score: float,
        confidence: float,
        coords: tuple[float, float] | None = None,
        level_confidence: list[float] | None = None,
    ) -> Answer:
        """An answer for entity rows ``path`` (coarse → fine); its location is the finest
        entity's mean coordinates unless ``coords`` are given."""
        places = []
        for lv, row in enumerate(path):
            eid, name, xy, _ = self.levels[lv]
            places.append(
                Place(
                    LEVEL_NAMES[lv] if lv < 4 else f"level{lv}",
                    str(eid[row]),
                    str(name[row]),
                    float(xy[row, 0]),
                    float(xy[row, 1]),
                )
            )
        lat, lon = coords if coords is not None else (places[-1].latitude, places[-1].longitude)
        levels = (
            {}
            if level_confidence is None
            else {p.level: float(c) for p, c in zip(places, level_confidence, strict=True)}
        )
        return Answer(places, float(lat), float(lon), float(score), float(confidence), levels)


class BaseLocator:
    """What every family's locator shares (:class:`~hierloc.locate.types.Locator`):
    :meth:`predict_features` (subclasses), and
    :meth:`predict` on features, feature stores or images. Subclasses set ``manifest``
    (with ``image_dim`` and ``encoder``) and ``_encoder = None``."""

    manifest: dict
    family = "model"  # the family's name (hierloc, geosurge, knn, …)
    batches_photos = True  # prepare_photo + predict_prepared (the service's micro-batches)
    supports_ten_crop = False  # predict_images(..., ten_crop=True)
    _encoder = None

    def describe(self) -> dict:
        """What this folder is (``GET /v1/models``, ``hierloc index``'s summary)."""
        m = self.manifest
        return {
            "family": self.family,
            "format": m.get("format"),
            "version": m.get("version"),
            "encoder": self.encoder_name,
            "image_dim": self.image_dim,
        } | self._counts()

    def _counts(self) -> dict:
        return {}

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

    def predict_features(
        self, features, *, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
    ) -> list[Prediction]:
        """Top-``top_k`` answers per row of ``features`` (``search``: ``beam`` or, for
        HierLoc, ``flat``: each level's nearest entity independently — Table 8's baseline)."""
        raise NotImplementedError

    def inputs_for(
        self,
        ids: np.ndarray,
        features: str | Path | None = None,
        semantic: str | Path | None = None,
    ):
        """``(inputs of the ids found, found mask)`` from a feature store (default: the one the
        model was trained on), what :meth:`predict_features` takes."""
        store = features or self.manifest.get("features")
        if not store:
            raise InputError("this model folder names no feature store; pass --features")
        return FeatureStore.open(store).lookup(ids)

    @property
    def encoder_name(self) -> str | None:
        enc = self.manifest.get("encoder")
        return enc.get("name") if isinstance(enc, dict) else None

    def image_encoder(self):
        """The encoder the model was trained on (created on first use)."""
        name = self.encoder_name
        if name is None:
            raise InputError(
                "this model folder does not name its image encoder (trained on features of "
                "unknown origin); pass a feature store or features"
            )
        if self._encoder is None:
            self._encoder = create_image_encoder(name).eval()
        return self._encoder

    def encode_images(self, sources: list[Path], batch_size: int = 32):
        """Images (files, folders, archives, a metadata file with a path column) → ``(ids,
        features, rejected)`` with the encoder the model was trained on."""
        return self.encode_items(collect_items(list(sources)), batch_size)

    def encode_items(self, items: list[Item], batch_size: int = 32):
        """Image items (:func:`hierloc.data.images.collect_items`) → ``(ids, features,
        rejected)`` with the encoder the model was trained on."""
        ds = ImageDataset(items, self.image_encoder().preprocess)
        ids, feats, rejected = [], [], []
        try:
            for s in range(0, len(items), batch_size):
                batch = [ds[i] for i in range(s, min(len(items), s + batch_size))]
                good = [(i, t) for i, t, reason in batch if not reason]
                rejected += [Rejected(items[i].id, reason) for i, _, reason in batch if reason]
                if good:
                    f = self.encode_tensors([t for _, t in good])
                    feats.append(f)
                    ids += [items[i].id for i, _ in good]
        finally:
            ds.close()
        features = np.concatenate(feats) if feats else np.zeros((0, self.image_dim), np.float32)
        return ids, features, rejected

    def encode_tensors(self, tensors: list[torch.Tensor]) -> np.ndarray:
        """Preprocessed images (:meth:`prepare_photo`) → features ``(N, D)`` in one pass."""
        with torch.no_grad():
            return self.image_encoder()(torch.stack(tensors)).float().numpy()

    # -- photos in memory (the service) ---------------------------------------------------
    def prepare_photo(self, data: bytes) -> tuple[torch.Tensor | None, str | None]:
        """One photo's bytes → ``(the encoder's input tensor, None)`` or ``(None, reason)``;
        the same decoding (pixel limit, EXIF orientation, RGB) and preprocessing as
        ``hierloc predict``. Thread-safe: the service runs it in a pool."""
        img, reason = decode(data)
        if img is None:
            return None, reason
        try:
            return self.image_encoder().preprocess(img), None
        except (OSError, ValueError) as e:
            return None, f"preprocessing failed: {e}"

    def predict_prepared(
        self, ids: list[str], tensors: list[torch.Tensor], *, top_k: int = 5, beam: int = 10
    ) -> list[Prediction]:
        """Prepared photos (:meth:`prepare_photo`) → predictions: one encoder pass, one
        batched search."""
        if not tensors:
            return []
        feats = self.encode_tensors(tensors)
        return self.predict_features(feats, ids=ids, top_k=top_k, beam=beam)

    def predict_photos(
        self, photos: list[tuple[str, bytes]], *, top_k: int = 5, beam: int = 10
    ) -> tuple[list[Prediction], list[Rejected]]:
        """``(id, bytes)`` photos → predictions and the photos that could not be read."""
        kept, tensors, rejected = prepare_photos(self, photos)
        ids = [photos[k][0] for k in kept]
        preds = self.predict_prepared(ids, tensors, top_k=top_k, beam=beam)
        return preds, [r for _, r in rejected]

    def predict_store(
        self, path: str | Path, *, top_k: int = 5, beam: int = 10
    ) -> list[Prediction]:
        """Every row of a feature store (``hierloc extract``), which must hold features of
        the encoder the model was trained on."""
        store = FeatureStore.open(path)
        store_enc = (encoder_description(store.manifest.get("encoder")) or {}).get("name")
        if self.encoder_name and store_enc and store_enc != self.encoder_name:
            raise InputError(
                f"{path}: features by {store_enc!r} but this model was "
                f"trained on {self.encoder_name!r} features"
            )
        feats = np.asarray(store.features, dtype=np.float32)
        ids = list(store.ids.to_pylist())
        return self.predict_features(feats, ids=ids, top_k=top_k, beam=beam)

    def predict_images(
        self, sources, *, top_k: int = 5, beam: int = 10, ten_crop: bool = False
    ) -> tuple[list[Prediction], list[Rejected]]:
        """Image sources (files, folders, archives, a metadata file with a path column) →
        ``(predictions, rejected inputs with their reason)``, encoded with the model's own
        encoder. ``ten_crop``: families with ``supports_ten_crop`` (GeoSURGE)."""
        if ten_crop:
            raise InputError(f"--ten-crop applies to GeoSURGE models only, not {self.family}")
        sources = [Path(p) for p in ([sources] if isinstance(sources, str | Path) else sources)]
        got_ids, feats, rejected = self.encode_images(sources)
        return self.predict_features(feats, ids=got_ids, top_k=top_k, beam=beam), rejected
