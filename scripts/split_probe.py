"""How much signal does a benchmark design carry across its guard band? For each design
(imagery, patch, block, guard) it builds the benchmark at the demo's sizes, extracts the demo's
features and reports, on the validation split only, 1-NN retrieval (cosine on the features,
the training patches as the gallery) against the prior (the training medoid for every image):
GeoScore, median km and their ratio. The test split is built (the guard draws it first) but
never scored here.

    python scripts/split_probe.py -o runs/split-probe --design bmng:32:4:pixel \\
        --design bmng:64:4:pixel --design shadedrelief:64:4:pixel
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.bench.bluemarble import one_nn
from hierloc.data.bluemarble import build
from hierloc.data.extract import extract
from hierloc.data.features import FeatureStore
from hierloc.eval.metrics import distance_metrics
from hierloc.geo.haversine import haversine_km
from hierloc.locate.baselines import geographic_medoid

COUNTS = {"train": 10_000, "val": 500, "test": 1_000}
ENCODER = "efficientnet-lite0-onnx"


def probe(root: Path) -> dict:
    meta = pd.read_parquet(root / "metadata.parquet")
    extract([root / "metadata.parquet"], root / "features", encoder=ENCODER)
    store = FeatureStore.open(root / "features")
    x = np.asarray(store.features, dtype=np.float32)
    row = {i: k for k, i in enumerate(store.ids.to_pylist())}
    train = meta[meta["split"] == "train"].reset_index(drop=True)
    val = meta[meta["split"] == "val"].reset_index(drop=True)
    nn = one_nn(x[[row[i] for i in train["id"]]], x[[row[i] for i in val["id"]]])
    medoid = geographic_medoid(train[["latitude", "longitude"]].to_numpy())
    out = {}
    for name, lat, lon in (
        ("knn", train["latitude"].to_numpy()[nn], train["longitude"].to_numpy()[nn]),
        ("prior", train["latitude"].iloc[medoid], train["longitude"].iloc[medoid]),
    ):
        d = haversine_km(lat, lon, val["latitude"].to_numpy(), val["longitude"].to_numpy())
        m = distance_metrics(np.broadcast_to(d, len(val)))
        out[name] = {"geoscore": round(m["geoscore"]), "median_km": round(m["median_km"])}
    out["ratio"] = round(out["knn"]["geoscore"] / out["prior"]["geoscore"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True, help="folder for the designs")
    ap.add_argument(
        "--design", action="append", required=True, help="IMAGERY:PATCH:BLOCK:GUARD, repeatable"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = []
    for design in args.design:
        imagery, patch, block, guard = design.split(":")
        root = args.output / design.replace(":", "-")
        if not (root / "manifest.json").exists():
            build(root, patch=int(patch), block=float(block), imagery=imagery, seed=args.seed,
                  counts=COUNTS, guard=guard)  # fmt: skip
        manifest = json.loads((root / "manifest.json").read_text())
        row = {"design": design, "patch_km": manifest["patch_km_equator"], **probe(root)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    (args.output / "probe.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
