"""Probe: can GeoSURGE's fusion use a semantic map at all? A positive control for
Table VIII. Copies a semantic store and replaces every map with one class that carries
information the RGB patch does not: the image's 60° longitude band (six classes, the store's
own class count), painted over the whole map. A model that fuses maps should gain on one that
does not; if it does not gain, the fusion path is broken.

    python scripts/oracle_maps.py runs/demo/semantic runs/demo/data -o runs/oracle/semantic
    hierloc train --model geosurge --cells runs/demo/cells --features runs/demo/tokens \\
        --semantic runs/oracle/semantic --val runs/demo/data/val.parquet -o RUN --set …

The maps are made from the true location of every split's images (test included): an
oracle, for this control only.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd


def longitude_band(lon: np.ndarray, classes: int) -> np.ndarray:
    """Class of each longitude: ``classes`` equal bands from −180° (180° in the last)."""
    band = np.floor((np.asarray(lon, np.float64) + 180.0) / (360.0 / classes)).astype(int)
    return np.clip(band, 0, classes - 1).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("store", type=Path, help="semantic store (hierloc semantic)")
    ap.add_argument("data", type=Path, help="data folder with the splits' {split}.parquet")
    ap.add_argument("-o", "--output", type=Path, required=True, help="new store (must not exist)")
    args = ap.parse_args()
    if args.output.exists():
        raise SystemExit(f"{args.output} exists; choose a new folder")
    manifest = json.loads((args.store / "manifest.json").read_text())
    classes = len(manifest["encoder"]["classes"])
    meta = pd.concat([pd.read_parquet(p) for p in sorted(args.data.glob("*.parquet"))])
    lon = meta.drop_duplicates("id").set_index("id")["longitude"]
    ids = pd.read_parquet(args.store / "ids.parquet")
    missing = ~ids["id"].isin(lon.index)
    if missing.any():
        raise SystemExit(f"{int(missing.sum())} maps have no row in {args.data}/*.parquet")
    shutil.copytree(args.store, args.output)
    maps = np.load(args.output / "features.npy", mmap_mode="r+")
    band = longitude_band(lon.loc[ids["id"]].to_numpy(), classes)
    maps[ids["item"].to_numpy()] = band[:, None]
    maps.flush()
    print(f"{args.output}: {len(ids)} maps, one class each; images per class {np.bincount(band)}")


if __name__ == "__main__":
    main()
