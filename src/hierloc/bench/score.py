"""``hierloc bench score``: score N synthetic rows end to end with the osv5m protocol.

Times what ``hierloc score`` does (read both files, validate, join, haversine, reverse
geocoding of the predictions, level accuracies), and, side by side in the same run, labels a
subsample with ``reverse_geocoder.search`` (what OSV5M's official code calls) against our
vectorised lookup, reporting the speed ratio and checking that both give the same labels.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hierloc.bench.synthetic import make_pairs
from hierloc.eval.score import score_files
from hierloc.geo.geonames import GeoNamesGazetteer, default_gazetteer

log = logging.getLogger(__name__)


@dataclass
class ScoreBench:
    rows: int
    file_format: str
    seconds_generate: float
    seconds_score: float
    rows_per_second: float
    target_seconds: float
    compare_rows: int
    seconds_ours_labels: float | None
    seconds_reverse_geocoder: float | None
    speedup_vs_reverse_geocoder: float | None
    labels_identical: bool | None
    metrics: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _compare_with_reverse_geocoder(lat, lon, n: int):
    """Seconds for our labels vs ``reverse_geocoder.search(mode=1)`` on the same ``n`` points."""
    import reverse_geocoder  # the peer library compared against, only for this benchmark

    pts_lat, pts_lon = lat[:n], lon[:n]
    t0 = time.perf_counter()
    gaz = GeoNamesGazetteer.load()
    idx = gaz.nearest(pts_lat, pts_lon)
    ours = gaz.level_keys("city")[idx]
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loading formatted …"
        found = reverse_geocoder.search(
            [(float(a), float(b)) for a, b in zip(pts_lat, pts_lon, strict=True)], mode=1
        )
    theirs = np.array(
        ["_".join([r["name"], r["admin2"], r["admin1"], r["cc"]]) for r in found], dtype=object
    )
    t_rg = time.perf_counter() - t0
    return t_ours, t_rg, bool((ours == theirs).all())


def run(
    rows: int = 5_000_000,
    file_format: str = "parquet",
    workdir: Path | None = None,
    compare_rows: int = 200_000,
    seed: int = 0,
) -> ScoreBench:
    """Generate ``rows`` pairs, write them as ``file_format``, and time :func:`score_files`."""
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', got {file_format!r}")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        t0 = time.perf_counter()
        pred, truth = make_pairs(rows, seed=seed)
        pred_path = Path(tmp) / f"pred.{file_format}"
        truth_path = Path(tmp) / f"truth.{file_format}"
        for frame, path in ((pred, pred_path), (truth, truth_path)):
            if file_format == "parquet":
                frame.to_parquet(path, index=False)
            else:
                frame.to_csv(path, index=False)
        lat, lon = pred["latitude"].to_numpy(), pred["longitude"].to_numpy()
        del pred, truth
        t_gen = time.perf_counter() - t0
        log.info("generated %d rows in %.1f s", rows, t_gen)

        default_gazetteer.cache_clear()  # the timed run loads the gazetteer itself
        t0 = time.perf_counter()
        result = score_files(pred_path, truth_path, protocol="osv5m")
        t_score = time.perf_counter() - t0

    compare_rows = min(compare_rows, rows)
    t_ours = t_rg = same = None
    if compare_rows > 0:
        t_ours, t_rg, same = _compare_with_reverse_geocoder(lat, lon, compare_rows)
    return ScoreBench(
        rows=rows,
        file_format=file_format,
        seconds_generate=round(t_gen, 3),
        seconds_score=round(t_score, 3),
        rows_per_second=round(rows / t_score, 1),
        target_seconds=60.0 * rows / 5_000_000,
        compare_rows=compare_rows,
        seconds_ours_labels=None if t_ours is None else round(t_ours, 3),
        seconds_reverse_geocoder=None if t_rg is None else round(t_rg, 3),
        speedup_vs_reverse_geocoder=None if t_rg is None else round(t_rg / t_ours, 2),
        labels_identical=same,
        metrics=result.to_dict(),
    )
