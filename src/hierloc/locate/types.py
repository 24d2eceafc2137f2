"""What every model family answers, and the small interface everything downstream talks to.

Results: a :class:`Prediction` per image holds its ranked :class:`Answer` s, each a path of
:class:`Place` s (coarse → fine: country, region, subregion, city) with coordinates, a score and
per-level confidences; an input that could not be used is a :class:`Rejected` with its reason.

:class:`Locator`: a loaded model folder (any family). ``eval``, ``serve``, the CLI and the
workflows use only this protocol and :func:`hierloc.locate.load_locator` — never a model class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


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


def answer_rows(predictions: list[Prediction]) -> list[dict]:
    """One flat row per answer: ``id, rank, latitude, longitude, score, confidence`` and per
    level the entity's name, ``{level}_id`` and ``{level}_confidence`` (``hierloc predict``'s
    CSV/JSON rows; the HTTP API nests the same values per place)."""
    rows = []
    for p in predictions:
        for rank, a in enumerate(p.answers, 1):
            row = {
                "id": p.id,
                "rank": rank,
                "latitude": a.latitude,
                "longitude": a.longitude,
                "score": a.score,
                "confidence": a.confidence,
            }
            for place in a.places:
                row[place.level] = place.name
                row[f"{place.level}_id"] = place.entity_id
                row[f"{place.level}_confidence"] = a.level_confidence.get(place.level)
            rows.append(row)
    return rows


@runtime_checkable
class Locator(Protocol):
    """A loaded model folder of any family (``hierloc.locate.load_locator``): everything its
    callers use (``hierloc predict``, ``evaluate``, ``compare``, the service). Inputs come
    by explicit method — features, a feature store, image sources or photos in memory — and
    the options are keyword-only, in one order: ``ids``, ``top_k``, ``beam``, then the rest."""

    manifest: dict  # the folder's manifest.json (format, version, encoder, …)
    family: str  # hierloc, geosurge, knn, …
    batches_photos: bool  # prepare_photo + predict_prepared batch (else predict_photos)
    supports_ten_crop: bool  # predict_images(..., ten_crop=True)

    @property
    def image_dim(self) -> int:
        """The width of one image's inputs as :meth:`predict_features` takes them."""
        ...

    @property
    def encoder_name(self) -> str | None:
        """The image encoder the model was trained on (None: features of unknown origin)."""
        ...

    def image_encoder(self):
        """The encoder the model was trained on (created on first use)."""
        ...

    def describe(self) -> dict:
        """What this folder is: family, encoder, entity or cell counts, version."""
        ...

    def predict_features(
        self, features, *, ids=None, top_k: int = 5, beam: int = 10, search: str = "beam"
    ) -> list[Prediction]:
        """Top-``top_k`` answers per row of ``features`` (what :meth:`inputs_for` returns)."""
        ...

    def predict_store(
        self, path: str | Path, *, top_k: int = 5, beam: int = 10
    ) -> list[Prediction]:
        """Every row of a feature store made with the model's encoder."""
        ...

    def predict_images(
        self, sources, *, top_k: int = 5, beam: int = 10, ten_crop: bool = False
    ) -> tuple[list[Prediction], list[Rejected]]:
        """Image files, folders, archives or a metadata file → predictions and the images
        that could not be used."""
        ...

    def prepare_photo(self, data: bytes):
        """One photo's bytes → ``(the encoder's input, None)`` or ``(None, reason)``."""
        ...

    def predict_prepared(
        self, ids: list[str], tensors: list, *, top_k: int = 5, beam: int = 10
    ) -> list[Prediction]:
        """Prepared photos (:meth:`prepare_photo`) → predictions, one batch."""
        ...

    def predict_photos(
        self, photos: list[tuple[str, bytes]], *, top_k: int = 5, beam: int = 10
    ) -> tuple[list[Prediction], list[Rejected]]:
        """``(id, bytes)`` photos in memory → predictions and the photos not read."""
        ...

    def inputs_for(
        self,
        ids: np.ndarray,
        features: str | Path | None = None,
        semantic: str | Path | None = None,
    ):
        """``(inputs of the ids found, found mask)`` from the stores the model reads."""
        ...
