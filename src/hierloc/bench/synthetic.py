"""Synthetic (prediction, truth) pairs in OSV5M's format, for the score benchmark and the example.

Truth points are GeoNames cities1000 places (jittered by up to ~2 km) labelled with OSV5M-style
``unique_*`` keys, missing admin parts written ``NaN`` as in OSV5M's CSVs and ~1 % of labels
the string ``nan``. Predictions mix near hits (~5 km), regional misses (~150 km) and random
cities elsewhere, so every metric is exercised.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hierloc.geo.geonames import LEVELS, GeoNamesGazetteer, default_gazetteer

_TRUTH_COLUMNS = ("unique_country", "unique_region", "unique_sub-region", "unique_city")


def _osv5m_style(keys: np.ndarray) -> np.ndarray:
    """Write empty key parts as ``NaN`` (``"Seoul__Seoul_KR"`` → ``"Seoul_NaN_Seoul_KR"``)."""
    codes, uniques = pd.factorize(keys)
    fixed = np.array(["_".join(p or "NaN" for p in u.split("_")) for u in uniques], dtype=object)
    return fixed[codes]


def make_pairs(
    n: int, seed: int = 0, gazetteer: GeoNamesGazetteer | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(predictions, truth)`` frames with ``n`` rows each and ids ``"0" … "n-1"``."""
    gaz = gazetteer or default_gazetteer()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(gaz), n)
    lat = np.clip(gaz.lat[rows] + rng.normal(0, 0.01, n), -90, 90)
    lon = gaz.lon[rows] + rng.normal(0, 0.01, n)
    lon = (lon + 180) % 360 - 180
    ids = np.arange(n).astype(str).astype(object)
    truth = pd.DataFrame({"id": ids, "latitude": lat, "longitude": lon})
    for level, column in zip(LEVELS, _TRUTH_COLUMNS, strict=True):
        labels = _osv5m_style(gaz.level_keys(level)[rows])
        labels[rng.random(n) < 0.01] = "nan"
        truth[column] = labels

    kind = rng.choice(3, size=n, p=[0.35, 0.35, 0.30])
    scale = np.where(kind == 0, 0.05, 1.5)  # degrees: ~5 km or ~150 km
    p_lat = lat + rng.normal(0, 1, n) * scale
    p_lon = lon + rng.normal(0, 1, n) * scale / np.maximum(np.cos(np.deg2rad(lat)), 0.2)
    far = kind == 2
    other = rng.integers(0, len(gaz), int(far.sum()))
    p_lat[far], p_lon[far] = gaz.lat[other], gaz.lon[other]
    pred = pd.DataFrame(
        {
            "id": ids,
            "latitude": np.clip(p_lat, -90, 90),
            "longitude": (p_lon + 180) % 360 - 180,
        }
    )
    return pred, truth
