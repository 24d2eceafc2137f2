"""How much signal does a benchmark design carry across its guard band? For each design
(imagery, patch, block, guard) it builds the benchmark at the demo's sizes, extracts the demo's
features and reports, on the validation split only, against the prior (the training medoid for
every image):

* ``knn`` — 1-NN retrieval (cosine on the features, the training patches as the gallery);
* ``linear`` — a linear softmax over the training locations' 2° grid cells (at least 5 images
  each), answering the cell centre with the highest expected GeoScore under its posterior
  (the Bayes answer: what a calibrated model that read the pixels would say).

GeoScore, median km and the ratio of the best to the prior. The test split is built (the guard
draws it first) but never scored here.

    python scripts/split_probe.py -o runs/split-probe --design bmng:32:4:pixel \\
        --design bmng:64:4:pixel --design shadedrelief:64:4:pixel
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from hierloc.bench.bluemarble import one_nn, split_features
from hierloc.data.bluemarble import build
from hierloc.eval.metrics import distance_metrics
from hierloc.geo.haversine import haversine_km
from hierloc.train.baselines import geographic_medoid

COUNTS = {"train": 10_000, "val": 500, "test": 1_000}
ENCODER = "efficientnet-lite0-onnx"


def geoscore_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``5000·exp(−km/1492.7)`` between every row of ``a`` and of ``b`` (degrees)."""
    km = haversine_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
    return 5000 * np.exp(-km / 1492.7)


def linear_bayes(xtr, ytr, xva, seed: int = 0) -> np.ndarray:
    """The ``linear`` probe's answers ``(N_val, 2)``: softmax regression on 2° cells, then the
    cell centre maximising the posterior-expected GeoScore."""
    cell = np.floor(ytr[:, 0] / 2) * 1000 + np.floor(ytr[:, 1] / 2)
    keys, inv, counts = np.unique(cell, return_inverse=True, return_counts=True)
    keep = counts[inv] >= 5
    keys, inv = np.unique(cell[keep], return_inverse=True)
    centres = np.stack([ytr[keep][inv == k].mean(0) for k in range(len(keys))])
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    x = torch.tensor((xtr[keep] - mu) / sd, dtype=torch.float32)
    y = torch.tensor(inv)
    torch.manual_seed(seed)
    model = torch.nn.Linear(x.shape[1], len(keys))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    for _ in range(30):
        for idx in torch.randperm(len(x)).split(256):
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        p = torch.softmax(model(torch.tensor((xva - mu) / sd, dtype=torch.float32)), 1).numpy()
    expected = p @ geoscore_matrix(centres, centres)  # (N_val, cells)
    return centres[expected.argmax(1)]


def probe(root: Path) -> dict:
    parts = split_features(root, ENCODER, ("train", "val"))
    (train, xtr), (val, xva) = parts["train"], parts["val"]
    nn = one_nn(xtr, xva)
    medoid = geographic_medoid(train[["latitude", "longitude"]].to_numpy())
    lin = linear_bayes(xtr, train[["latitude", "longitude"]].to_numpy(), xva)
    out = {}
    for name, lat, lon in (
        ("knn", train["latitude"].to_numpy()[nn], train["longitude"].to_numpy()[nn]),
        ("linear", lin[:, 0], lin[:, 1]),
        ("prior", train["latitude"].iloc[medoid], train["longitude"].iloc[medoid]),
    ):
        d = haversine_km(lat, lon, val["latitude"].to_numpy(), val["longitude"].to_numpy())
        m = distance_metrics(np.broadcast_to(d, len(val)))
        out[name] = {"geoscore": round(m["geoscore"]), "median_km": round(m["median_km"])}
    best = max(out["knn"]["geoscore"], out["linear"]["geoscore"])
    out["ratio"] = round(best / out["prior"]["geoscore"], 2)
    out["val_blocks"] = int(val["block"].nunique())
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
