"""Probe: HierLoc's predicted entity, then 1-NN retrieval restricted to the training
images of that entity (its coordinates as the answer). Scores the split against plain HierLoc
and plain 1-NN. Reads ``hierloc evaluate``'s predictions.parquet; no training.

    python scripts/refine_probe.py --pred MODEL/eval-val/predictions.parquet \
        --hierarchy H --features F [--levels country,region,subregion]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from hierloc.data.features import FeatureStore
from hierloc.eval.metrics import distance_metrics
from hierloc.geo.haversine import haversine_km


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--hierarchy", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--levels", default="country,region,subregion")
    a = ap.parse_args()
    pred = pd.read_parquet(a.pred)
    lab = pd.read_parquet(f"{a.hierarchy}/labels.parquet")
    store = FeatureStore.open(a.features)
    gal, ok = store.lookup(lab["id"].to_numpy())
    lab = lab[ok].reset_index(drop=True)
    gal = unit(gal)
    q, qok = store.lookup(pred["id"].to_numpy())
    assert qok.all()
    sim = unit(q) @ gal.T  # (queries, gallery)
    tlat, tlon = pred["true_latitude"].to_numpy(), pred["true_longitude"].to_numpy()
    glat, glon = lab["latitude"].to_numpy(), lab["longitude"].to_numpy()
    rows = {"hierloc": haversine_km(pred["latitude"], pred["longitude"], tlat, tlon)}
    nn = sim.argmax(1)
    rows["knn"] = haversine_km(glat[nn], glon[nn], tlat, tlon)
    for level in a.levels.split(","):
        col = f"{level}_id"
        mask = lab[col].to_numpy()[None, :] == pred[col].to_numpy()[:, None]
        s = np.where(mask, sim, -np.inf)
        j = s.argmax(1)
        has = mask.any(1)
        lat = np.where(has, glat[j], pred["latitude"])
        lon = np.where(has, glon[j], pred["longitude"])
        rows[f"hierloc {level} + 1-NN inside"] = haversine_km(lat, lon, tlat, tlon)
    print("| answer | GeoScore | median km | < 25 km % | < 200 km % |\n|---|---|---|---|---|")
    for name, d in rows.items():
        m = distance_metrics(np.asarray(d))
        print(
            f"| {name} | {m['geoscore']:,.0f} | {m['median_km']:,.0f} | "
            f"{100 * m['acc_25km']:.1f} | {100 * m['acc_200km']:.1f} |"
        )


if __name__ == "__main__":
    main()
