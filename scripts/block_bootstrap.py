"""Probe (issue 13): how far apart two models' GeoScores are on one split, beyond what the
split's few geographic blocks can resolve. The benchmark's held-out splits are whole 4° blocks
(the demo's test split: 1,000 images in ~70 blocks, the largest a quarter of them), so images
of a block are not independent; this resamples *blocks* with replacement (paired: both models
on the same images) and reports the 95 % interval of the mean per-image GeoScore difference.

    python scripts/block_bootstrap.py A/predictions.parquet B/predictions.parquet \
        [--block 4] [--draws 4000] [--seed 0]

Reads ``hierloc evaluate``'s predictions.parquet of each model (same split).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from hierloc.geo.haversine import haversine_km

GEOSCORE_KM = 1492.7


def per_image_geoscore(lat, lon, true_lat, true_lon) -> np.ndarray:
    d = haversine_km(lat, lon, true_lat, true_lon)
    return 5000 * np.exp(-np.asarray(d, dtype=np.float64) / GEOSCORE_KM)


def block_ids(lat: np.ndarray, lon: np.ndarray, block: float) -> np.ndarray:
    """The benchmark's block of each location (rows of ``block`` degrees from the south pole,
    columns from the antimeridian)."""
    n_rows, n_cols = int(np.ceil(180 / block)), int(np.ceil(360 / block))
    row = np.floor((np.asarray(lat) + 90) / block).clip(0, n_rows - 1)
    col = np.floor((np.asarray(lon) + 180) / block).clip(0, n_cols - 1)
    return (row * n_cols + col).astype(np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("a", help="predictions.parquet of model A")
    ap.add_argument("b", help="predictions.parquet of model B")
    ap.add_argument("--block", type=float, default=4.0, help="block size in degrees")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    a, b = pd.read_parquet(args.a), pd.read_parquet(args.b)
    m = a.merge(b[["id", "latitude", "longitude"]], on="id", suffixes=("", "_b"))
    if len(m) != len(a) or len(m) != len(b):
        raise SystemExit(f"the two files share {len(m)} ids of {len(a)} and {len(b)}")
    truth = m["true_latitude"], m["true_longitude"]
    diff = per_image_geoscore(m["latitude"], m["longitude"], *truth) - per_image_geoscore(
        m["latitude_b"], m["longitude_b"], *truth
    )
    blocks = block_ids(m["true_latitude"], m["true_longitude"], args.block)
    uniq, inv = np.unique(blocks, return_inverse=True)
    sums = np.bincount(inv, weights=diff)  # per block: summed difference and image count
    counts = np.bincount(inv).astype(np.float64)
    rng = np.random.default_rng(args.seed)
    picks = rng.integers(0, len(uniq), size=(args.draws, len(uniq)))
    boot = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    top = np.sort(counts)[::-1]
    print(
        f"A − B: {diff.mean():+.0f} GeoScore over {len(diff)} images in {len(uniq)} blocks "
        f"(largest {int(top[0])}, five largest {int(top[:5].sum())}); block bootstrap 95 % "
        f"[{lo:+.0f}, {hi:+.0f}]; an i.i.d. standard error would say ±"
        f"{1.96 * diff.std(ddof=1) / np.sqrt(len(diff)):.0f}"
    )


if __name__ == "__main__":
    main()
