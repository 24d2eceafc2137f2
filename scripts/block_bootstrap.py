"""How far apart two models' GeoScores are on one split, beyond what the
split's few geographic blocks can resolve. The benchmark's held-out splits are whole 4° blocks
(the demo's test split: 1,000 images in 99 blocks, at most 33 in one), so images
of a block are not independent; this resamples *blocks* with replacement (paired: both models
on the same images) and reports the 95 % interval of the mean per-image GeoScore difference,
the same for the median km (each draw's images pooled), then the mean difference by B's
error band.

    python scripts/block_bootstrap.py A/predictions.parquet B/predictions.parquet \
        [--block 4] [--draws 4000] [--seed 0]
    python scripts/block_bootstrap.py A/predictions.parquet     # one model alone

Reads ``hierloc evaluate``'s predictions.parquet of each model (same split). With one file it
reports that model's GeoScore and country accuracy with their block-bootstrap intervals: how
much a split of this many blocks can say about either (e.g. whether two splits' accuracies
differ beyond it).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from hierloc.data.bluemarble import block_ids
from hierloc.eval.metrics import geoscore
from hierloc.geo.haversine import haversine_km


def block_draws(p: pd.DataFrame, args: argparse.Namespace):
    """``(inv, counts, picks)``: each image's block, the images per block, and ``draws`` resamples
    of the blocks with replacement."""
    blocks = block_ids(p["true_latitude"].to_numpy(), p["true_longitude"].to_numpy(), args.block)
    uniq, inv = np.unique(blocks, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    picks = np.random.default_rng(args.seed).integers(0, len(uniq), size=(args.draws, len(uniq)))
    return inv, counts, picks


def interval(per_image: np.ndarray, inv, counts, picks) -> tuple[float, float]:
    """95 % interval of the per-image mean over the block resamples."""
    sums = np.bincount(inv, weights=per_image)
    boot = sums[picks].sum(1) / counts[picks].sum(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("a", help="predictions.parquet of model A")
    ap.add_argument("b", nargs="?", help="predictions.parquet of model B (optional)")
    ap.add_argument("--block", type=float, default=4.0, help="block size in degrees")
    ap.add_argument("--draws", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.b is None:
        alone(pd.read_parquet(args.a), args)
        return
    a, b = pd.read_parquet(args.a), pd.read_parquet(args.b)
    m = a.merge(b[["id", "latitude", "longitude"]], on="id", suffixes=("", "_b"))
    if len(m) != len(a) or len(m) != len(b):
        raise SystemExit(f"the two files share {len(m)} ids of {len(a)} and {len(b)}")
    truth = m["true_latitude"], m["true_longitude"]
    km_a = np.asarray(haversine_km(m["latitude"], m["longitude"], *truth))
    km_b = np.asarray(haversine_km(m["latitude_b"], m["longitude_b"], *truth))
    diff = geoscore(km_a) - geoscore(km_b)
    inv, counts, picks = block_draws(m, args)
    lo, hi = interval(diff, inv, counts, picks)
    top = np.sort(counts)[::-1]
    print(
        f"A − B: {diff.mean():+.0f} GeoScore over {len(diff)} images in {len(counts)} blocks "
        f"(largest {int(top[0])}, five largest {int(top[:5].sum())}); block bootstrap 95 % "
        f"[{lo:+.0f}, {hi:+.0f}]; an i.i.d. standard error would say ±"
        f"{1.96 * diff.std(ddof=1) / np.sqrt(len(diff)):.0f}"
    )
    # the median error is not a sum over blocks: each draw's images are pooled and their
    # medians taken (A − B; negative = A's median error is smaller)
    members = [np.flatnonzero(inv == k) for k in range(len(counts))]
    med = np.empty(args.draws)
    for i, pick in enumerate(picks):
        rows = np.concatenate([members[k] for k in pick])
        med[i] = np.median(km_a[rows]) - np.median(km_b[rows])
    mlo, mhi = np.quantile(med, [0.025, 0.975])
    print(
        f"median km: A {np.median(km_a):,.0f}, B {np.median(km_b):,.0f}, A − B "
        f"{np.median(km_a) - np.median(km_b):+,.0f}; block bootstrap 95 % "
        f"[{mlo:+,.0f}, {mhi:+,.0f}]"
    )
    for lo_km, hi_km in ((0, 200), (200, 750), (750, 2500), (2500, np.inf)):
        band = (km_b >= lo_km) & (km_b < hi_km)
        span = f"{lo_km:,}–{hi_km:,} km" if np.isfinite(hi_km) else f"over {lo_km:,} km"
        if band.any():
            print(
                f"  where B's error is {span} ({100 * band.mean():.0f} % of images): "
                f"A − B {diff[band].mean():+.0f} per image"
            )


def alone(p: pd.DataFrame, args: argparse.Namespace) -> None:
    """One model's GeoScore and country accuracy, each with its block-bootstrap interval."""
    km = np.asarray(
        haversine_km(p["latitude"], p["longitude"], p["true_latitude"], p["true_longitude"])
    )
    inv, counts, picks = block_draws(p, args)
    right = (p["country_id"] == p["true_country_id"]).to_numpy(np.float64)
    print(f"{len(p)} images in {len(counts)} blocks; block bootstrap 95 %:")
    for name, per_image, fmt in (
        ("GeoScore", geoscore(km), "{:,.0f}"),
        ("country %", 100 * right, "{:.1f}"),
    ):
        lo, hi = interval(per_image, inv, counts, picks)
        print(f"  {name}: {fmt.format(per_image.mean())} [{fmt.format(lo)}, {fmt.format(hi)}]")


if __name__ == "__main__":
    main()
