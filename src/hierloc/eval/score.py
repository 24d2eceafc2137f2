"""Scoring a prediction file against a truth file: ``hierloc score``.

Predictions: ``id, latitude, longitude`` (+ ``country_id, region_id, subregion_id, city_id``
for the entity protocol). Truth: ``id, latitude, longitude`` + OSV5M's ``unique_country,
unique_region, unique_sub-region, unique_city`` (the OSV5M test CSV works as is) and/or
entity ids. Rows are joined on ``id``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.tables import PointTable, points_from_frame, read_points
from hierloc.errors import InputError
from hierloc.eval.metrics import (
    LEVELS,
    distance_metrics,
    entity_level_accuracy,
    osv5m_level_accuracy,
)
from hierloc.geo.haversine import haversine_km

PROTOCOLS = ("auto", "osv5m", "entity", "distance")
OSV5M_COLUMNS = {
    "country": "unique_country",
    "region": "unique_region",
    "subregion": "unique_sub-region",
    "city": "unique_city",
}
ENTITY_COLUMNS = {level: f"{level}_id" for level in LEVELS}
JSON_KEYS = (
    "n",
    "geoscore",
    "mean_km",
    "median_km",
    "acc_1km",
    "acc_25km",
    "acc_200km",
    "acc_750km",
    "acc_2500km",
    "acc_country",
    "acc_region",
    "acc_subregion",
    "acc_city",
    "protocol",
)


@dataclass
class ScoreResult:
    """Metrics with the stable keys of :data:`JSON_KEYS`, plus how they were obtained.

    ``level_counts`` holds each level's denominator; ``left_out`` the rows of either file
    without a partner (scored only with ``allow_missing``).
    """

    metrics: dict
    clean: bool = False
    level_counts: dict = field(default_factory=dict)
    left_out: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {k: self.metrics.get(k) for k in JSON_KEYS}
        out["clean"] = self.clean
        out["level_counts"] = self.level_counts
        out["left_out"] = self.left_out
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _align(pred: PointTable, truth: PointTable, allow_missing: bool):
    """Row positions ``(pred_rows, truth_rows)`` of the ids present in both files."""
    truth_index = pd.Index(truth.frame["id"].to_numpy(dtype=object))
    pos = truth_index.get_indexer(pred.frame["id"].to_numpy(dtype=object))
    found = pos >= 0
    n_pred_only = int((~found).sum())
    n_truth_only = len(truth) - int(found.sum())
    if (n_pred_only or n_truth_only) and not allow_missing:
        if n_pred_only:
            row = int(np.flatnonzero(~found)[0])
            example = f"{pred.where(row)}: id {pred.frame['id'].iloc[row]!r} is not in {truth.path}"
        else:
            seen = np.zeros(len(truth), bool)
            seen[pos[found]] = True
            row = int(np.flatnonzero(~seen)[0])
            example = f"{truth.where(row)}: id {truth.frame['id'].iloc[row]!r} has no prediction"
        raise InputError(
            f"{example} ({n_pred_only} prediction ids missing from the truth, {n_truth_only} "
            "truth ids without a prediction); fix the files or pass --allow-missing to score "
            "the ids present in both"
        )
    pred_rows = np.flatnonzero(found)
    if pred_rows.size == 0:
        raise InputError(f"{pred.path} and {truth.path} share no id; nothing to score")
    return pred_rows, pos[found], {"predictions": n_pred_only, "truth": n_truth_only}


def _resolve_protocol(protocol: str, pred: PointTable, truth: PointTable) -> str:
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    has_osv5m = [lv for lv, c in OSV5M_COLUMNS.items() if c in truth.frame]
    has_entity = [lv for lv, c in ENTITY_COLUMNS.items() if c in truth.frame and c in pred.frame]
    if protocol == "auto":
        return "osv5m" if has_osv5m else "entity" if has_entity else "distance"
    if protocol == "osv5m" and not has_osv5m:
        raise InputError(
            f"{truth.path}: the osv5m protocol needs at least one of the columns "
            f"{list(OSV5M_COLUMNS.values())}; add them or use --protocol distance"
        )
    if protocol == "entity" and not has_entity:
        raise InputError(
            f"the entity protocol needs an entity id column ({', '.join(ENTITY_COLUMNS.values())}) "
            f"in both {pred.path} and {truth.path}; add it or use --protocol distance"
        )
    return protocol


def score_tables(
    pred: PointTable,
    truth: PointTable,
    protocol: str = "auto",
    clean: bool = False,
    allow_missing: bool = False,
) -> ScoreResult:
    """Score validated tables (see :func:`score_files`)."""
    protocol = _resolve_protocol(protocol, pred, truth)
    prow, trow, left_out = _align(pred, truth, allow_missing)
    p = pred.frame.iloc[prow].reset_index(drop=True)
    t = truth.frame.iloc[trow].reset_index(drop=True)
    d = haversine_km(
        p["latitude"].to_numpy(),
        p["longitude"].to_numpy(),
        t["latitude"].to_numpy(),
        t["longitude"].to_numpy(),
    )
    metrics = distance_metrics(d)
    counts: dict[str, tuple[int, int]] = {}
    if protocol == "osv5m":
        labels = {lv: t[c] for lv, c in OSV5M_COLUMNS.items() if c in t}
        counts = osv5m_level_accuracy(
            p["latitude"].to_numpy(), p["longitude"].to_numpy(), labels, clean=clean
        )
    elif protocol == "entity":
        cols = {lv: c for lv, c in ENTITY_COLUMNS.items() if c in p and c in t}
        counts = entity_level_accuracy(
            {lv: p[c] for lv, c in cols.items()}, {lv: t[c] for lv, c in cols.items()}
        )
    for level in LEVELS:
        hits, count = counts.get(level, (0, 0))
        metrics[f"acc_{level}"] = hits / count if count else None
    metrics["protocol"] = protocol
    return ScoreResult(
        metrics=metrics,
        clean=clean,
        level_counts={lv: c for lv, (_, c) in counts.items()},
        left_out=left_out,
    )


def score_frames(pred: pd.DataFrame, truth: pd.DataFrame, **kwargs) -> ScoreResult:
    """Score in-memory frames with the same columns and checks as the files (Python API)."""
    extra = list(ENTITY_COLUMNS.values())
    p = points_from_frame(pred, "<predictions>", optional=extra)
    t = points_from_frame(truth, "<truth>", optional=[*OSV5M_COLUMNS.values(), *extra])
    return score_tables(p, t, **kwargs)


def score_files(
    predictions: str | Path,
    truth: str | Path,
    protocol: str = "auto",
    clean: bool = False,
    allow_missing: bool = False,
) -> ScoreResult:
    """Read, validate, join on ``id`` and score.

    Args:
        predictions: CSV/Parquet with ``id, latitude, longitude`` (+ entity ids per level).
        truth: CSV/Parquet with ``id, latitude, longitude`` + ``unique_*`` labels or entity ids.
        protocol: ``auto`` (osv5m if the truth has ``unique_*`` columns, else entity if both
            files have entity ids, else distance), ``osv5m``, ``entity`` or ``distance``.
        clean: the clean treatment of missing labels (see :mod:`hierloc.eval.metrics`).
        allow_missing: score the ids present in both files instead of raising.

    Raises:
        InputError: for any unusable file, column or value, naming file, row and column.
    """
    extra = list(ENTITY_COLUMNS.values())
    pred = read_points(predictions, optional=extra)
    tru = read_points(truth, optional=[*OSV5M_COLUMNS.values(), *extra])
    return score_tables(pred, tru, protocol=protocol, clean=clean, allow_missing=allow_missing)
