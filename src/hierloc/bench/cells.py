"""``hierloc bench cells``: all seven GeoSURGE partitions of N points (target: 5 million in at
most 120 s), and, side by side, vectorised S2 leaf ids vs ``s2sphere`` per point."""

from __future__ import annotations

import time

import numpy as np

from hierloc.bench._measure import run_isolated
from hierloc.bench.geocode import photo_like_points
from hierloc.geo import s2
from hierloc.geo.gazetteer import unit_xyz
from hierloc.geo.s2cells import build_partitions


def _partitions(lat, lon) -> dict:
    parts, _ = build_partitions(lat, lon)
    return {"cells": [len(p) for p in parts]}


def run(rows: int = 5_000_000, compare_rows: int = 20_000) -> dict:
    import s2sphere  # the peer library compared against, only for this benchmark

    lat, lon = photo_like_points(rows, seed=1)
    measured = run_isolated(_partitions, lat, lon)
    m = min(compare_rows, rows)
    t0 = time.perf_counter()
    ours, *_ = s2.leaf_cells(unit_xyz(lat[:m], lon[:m]))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = [
        s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id()
        for a, b in zip(lat[:m].tolist(), lon[:m].tolist(), strict=True)
    ]
    t_ref = time.perf_counter() - t0
    return {
        "rows": rows,
        "seconds_all_partitions": measured["seconds"],
        "target_seconds": round(120.0 * rows / 5_000_000, 1),
        "peak_anon_mb": measured["peak_anon_mb"],
        "cells_per_partition": measured["result"]["cells"],
        "compare_rows": m,
        "seconds_ours_leaf_ids": round(t_ours, 4),
        "seconds_s2sphere_leaf_ids": round(t_ref, 3),
        "speedup_vs_s2sphere": round(t_ref / t_ours, 1),
        "ids_identical": bool(np.array_equal(ours, np.array(ref, dtype=np.uint64))),
    }
