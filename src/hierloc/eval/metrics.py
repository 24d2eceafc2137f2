"""The field's metrics, one implementation each.

* GeoScore (OSV5M's "Geoguessr" score): ``5000·exp(-δ/1492.7)``, δ in km, averaged.
* Mean and median great-circle error (km), accuracy within 1 / 25 / 200 / 750 / 2500 km with
  a strict ``<`` (as OSV5M).
* Accuracy per level (country, region, subregion, city) under two protocols:

  ``osv5m``: OSV5M's official evaluation (``metrics/distance_based.py``). The *predicted
  coordinates* are reverse-geocoded on GeoNames cities1000 (:mod:`hierloc.geo.geonames`) and
  the keys ``cc``, ``admin1_cc``, ``admin2_admin1_cc``, ``name_admin2_admin1_cc`` compared by
  exact string equality with the truth columns ``unique_country``, ``unique_region``,
  ``unique_sub-region``, ``unique_city``. By default the denominator of a level excludes only
  truth values equal to the string ``"nan"`` — missing values (``NaN`` as OSV5M's loader
  writes them, empty strings, ``"NaN"``) stay in it and can never be correct — so that numbers
  compare with published ones. ``clean=True`` instead treats ``""``, ``"nan"``, ``"NaN"`` and
  nulls alike: a label whose own name is missing (``"NaN_CW"`` for a region) is excluded, and
  missing parent parts inside a key (``"Seoul_NaN_Seoul_KR"``) compare as empty strings, the
  way the reverse geocoder writes them.

  ``entity``: the predicted entity id per level (what HierLoc's beam search outputs) against
  the truth's entity id; missing truth ids (null, ``""``, ``"nan"``, ``"NaN"``) are excluded.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from hierloc.geo.geonames import LEVELS, GeoNamesGazetteer, default_gazetteer

ACC_RADII_KM = (1, 25, 200, 750, 2500)
GEOSCORE_SCALE_KM = 1492.7
GEOSCORE_MAX = 5000.0
MISSING_TOKENS = ("", "nan", "NaN")
_MISSING_PART = re.compile(r"(?:(?<=_)|^)(?:nan|NaN)(?=_|$)")


def geoscore(d_km: np.ndarray) -> np.ndarray:
    """Per-sample GeoScore ``5000·exp(-d/1492.7)``."""
    return GEOSCORE_MAX * np.exp(-np.asarray(d_km, dtype=np.float64) / GEOSCORE_SCALE_KM)


def distance_metrics(d_km: np.ndarray) -> dict[str, float]:
    """``n, geoscore, mean_km, median_km, acc_{r}km`` from per-sample errors in km."""
    d = np.asarray(d_km, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no samples to score")
    out = {
        "n": int(d.size),
        "geoscore": float(geoscore(d).mean()),
        "mean_km": float(d.mean()),
        "median_km": float(np.median(d)),
    }
    for r in ACC_RADII_KM:
        out[f"acc_{r}km"] = float((d < r).mean())
    return out


def _codes(values: pd.Series, categories: pd.Index) -> np.ndarray:
    """Position of each value in ``categories`` (-1 if absent or null), ``(N,)`` int64."""
    uniques_codes, uniques = pd.factorize(values, use_na_sentinel=True)
    lookup = categories.get_indexer(pd.Index(uniques, dtype=object))
    lookup = np.append(lookup, -1)  # the sentinel -1 indexes the last slot
    return lookup[uniques_codes]


def _clean_labels(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """``(normalised labels, included mask)`` for the clean protocol (see module doc)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    norm = np.array([_MISSING_PART.sub("", u) for u in uniques], dtype=object)
    keep = np.array([u not in MISSING_TOKENS and not u.startswith("_") for u in norm], bool)
    norm = np.append(norm, None)
    keep = np.append(keep, False)
    return pd.Series(norm[codes], index=values.index, dtype=object), keep[codes]


def osv5m_level_accuracy(
    pred_lat: np.ndarray,
    pred_lon: np.ndarray,
    truth: dict[str, pd.Series],
    clean: bool = False,
    gazetteer: GeoNamesGazetteer | None = None,
) -> dict[str, tuple[int, int]]:
    """Correct and counted samples per level under OSV5M's protocol.

    Args:
        pred_lat, pred_lon: predicted coordinates in degrees, ``(N,)``.
        truth: level (``country``…``city``) → truth labels ``(N,)`` (str or None); levels
            absent from the dict are not scored.
        clean: the clean variant (see module doc) instead of OSV5M's literal rule.

    Returns:
        level → ``(hits, count)``.
    """
    gaz = gazetteer or default_gazetteer()
    nearest = gaz.nearest(pred_lat, pred_lon)  # (N,)
    out = {}
    for level in LEVELS:
        if level not in truth:
            continue
        labels = truth[level].reset_index(drop=True)
        if clean:
            labels, included = _clean_labels(labels)
        else:
            included = (labels != "nan").to_numpy(dtype=bool)  # None != "nan": included
        key_code, uniq_keys = pd.factorize(gaz.level_keys(level))
        truth_code = _codes(labels, pd.Index(uniq_keys, dtype=object))
        pred_code = key_code[nearest]
        hits = (truth_code == pred_code) & (truth_code >= 0) & included
        out[level] = (int(hits.sum()), int(included.sum()))
    return out


def _is_missing(values: pd.Series) -> np.ndarray:
    return (values.isna() | values.isin(MISSING_TOKENS)).to_numpy(dtype=bool)


def entity_level_accuracy(
    pred: dict[str, pd.Series], truth: dict[str, pd.Series]
) -> dict[str, tuple[int, int]]:
    """Correct and counted samples per level, comparing entity ids (levels in both dicts)."""
    out = {}
    for level in LEVELS:
        if level not in pred or level not in truth:
            continue
        t = truth[level].reset_index(drop=True)
        p = pred[level].reset_index(drop=True)
        included = ~_is_missing(t)
        hits = included & (p.to_numpy(dtype=object) == t.to_numpy(dtype=object))
        out[level] = (int(hits.sum()), int(included.sum()))
    return out


def calibration_error(conf: np.ndarray, right: np.ndarray, bins: int = 10) -> dict:
    """Expected calibration error of confidences ``conf`` against outcomes ``right`` (0/1):
    over ``bins`` equal-width bins of confidence, the bins' ``|share right − mean confidence|``
    weighted by their share of answers; with the mean confidence, the accuracy and the bins
    ``(bin, answers, mean confidence, share right)``."""
    conf, right = np.asarray(conf, np.float64), np.asarray(right, np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
            rows.append((b, int(m.sum()), float(conf[m].mean()), float(right[m].mean())))
    return {
        "n": len(conf),
        "ece": float(ece),
        "mean_confidence": float(conf.mean()) if len(conf) else float("nan"),
        "accuracy": float(right.mean()) if len(conf) else float("nan"),
        "bins": rows,
    }


def level_calibration(preds: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Per level with confidences (``{level}_confidence`` in ``preds``, not all missing): the
    calibration of the top answer's confidence against its being the true entity
    (:func:`calibration_error`); ``{}`` for a family without per-level confidences."""
    out = {}
    for lv in LEVELS:
        col = f"{lv}_confidence"
        if col not in preds.columns or f"{lv}_id" not in truth.columns:
            continue
        conf = pd.to_numeric(preds[col], errors="coerce").to_numpy(np.float64)
        keep = np.isfinite(conf)
        if not keep.any():
            continue
        right = preds[f"{lv}_id"].to_numpy(dtype=object) == truth[f"{lv}_id"].to_numpy(dtype=object)
        out[lv] = calibration_error(conf[keep], right[keep])
    return out
