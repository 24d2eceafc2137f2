"""Probe: answer the expected-GeoScore choice among a model's candidates instead of
its single best one, for HierLoc (the beam's final paths, weighted by ``softmax(score / T)``)
and for retrieval (the ``k`` nearest training images, weighted by ``softmax(cosine / T)``) —
the same decision rule for both, so the comparison stays fair. ``T`` is chosen on the
validation split for each model; the test split only reports. No training.

    python scripts/hedge_probe.py --model MODEL --data DATA --hierarchy H --features F [--k 10]

The candidate answered is ``argmax_i Σ_j w_j · exp(−d(c_i, c_j) / 1492.7 km)``: the expected
GeoScore of answering ``c_i`` if the truth were distributed over the candidates as ``w``.
``T = 0`` is the plain top-1 answer. Last, a gate between the two top-1 answers: retrieval's
when its best cosine similarity is at least ``t``, HierLoc's otherwise (``t`` from the
validation split's quantiles), and the per-image oracle of the two.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch

from hierloc.data.features import FeatureStore
from hierloc.eval.metrics import distance_metrics, geoscore
from hierloc.geo.haversine import haversine_km
from hierloc.locate.hierloc import Geolocator


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def hedge(lat: np.ndarray, lon: np.ndarray, score: np.ndarray, T: float) -> np.ndarray:
    """Per query, the index of the candidate with the highest expected GeoScore under
    ``softmax(score / T)`` over the candidates (``(B, k)`` arrays; ``-inf`` scores unused)."""
    if T == 0:
        return np.argmax(score, axis=1)
    w = torch.softmax(torch.from_numpy(score / T), dim=1).nan_to_num(0.0).numpy()
    d = haversine_km(lat[:, :, None], lon[:, :, None], lat[:, None, :], lon[:, None, :])
    gain = (geoscore(d) * w[:, None, :]).sum(2)  # (B, k): expected GeoScore of answer i
    gain[~np.isfinite(score)] = -1.0
    return np.argmax(gain, axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="HierLoc model folder (hierloc index)")
    ap.add_argument("--data", required=True, help="folder with val.parquet and test.parquet")
    ap.add_argument("--hierarchy", required=True)
    ap.add_argument("--features", required=True)
    ap.add_argument("--k", type=int, default=10, help="beam width / neighbours")
    a = ap.parse_args()
    geo = Geolocator.load(a.model)
    store = FeatureStore.open(a.features)
    lab = pd.read_parquet(f"{a.hierarchy}/labels.parquet")
    gal, ok = store.lookup(lab["id"].to_numpy())
    lab = lab[ok].reset_index(drop=True)
    gal = unit(gal)
    glat, glon = lab["latitude"].to_numpy(), lab["longitude"].to_numpy()
    city_xy = geo.names.levels[-1][2]
    tau = geo.raw_temperature
    grids = {
        "hierloc": [0.0] + [tau * f for f in (0.5, 1, 2, 4, 8, 16, 32, 64)],
        "knn": [0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1],
    }
    cands: dict = {}
    for split in ("val", "test"):
        meta = pd.read_parquet(f"{a.data}/{split}.parquet")
        q, qok = store.lookup(meta["id"].to_numpy())
        if not qok.all():
            raise SystemExit(f"{split}: {int((~qok).sum())} images have no features")
        truth = meta["latitude"].to_numpy(), meta["longitude"].to_numpy()
        res = geo.search(q, top_k=a.k, beam=a.k)
        rows = res.paths[:, :, -1].numpy()
        hs = res.scores.numpy().copy()
        hs[rows < 0] = -np.inf
        xy = city_xy[np.clip(rows, 0, None)]
        cands[("hierloc", split)] = (xy[..., 0], xy[..., 1], hs, truth)
        sim = unit(q) @ gal.T
        nn = np.argsort(-sim, axis=1)[:, : a.k]
        ks = np.take_along_axis(sim, nn, 1)
        cands[("knn", split)] = (glat[nn], glon[nn], ks, truth)
    print("| model | T | val GeoScore | test GeoScore | test median km |\n|---|---|---|---|---|")
    for model, grid in grids.items():
        out = []
        for T in grid:
            row = {"T": T}
            for split in ("val", "test"):
                lat, lon, s, (tlat, tlon) = cands[(model, split)]
                j = hedge(lat, lon, s, T)
                B = np.arange(len(j))
                m = distance_metrics(haversine_km(lat[B, j], lon[B, j], tlat, tlon))
                row[split] = m
            out.append(row)
        best = max(out, key=lambda r: r["val"]["geoscore"])
        for r in out:
            mark = " (chosen on val)" if r is best else ""
            print(
                f"| {model} | {r['T']:.4g}{mark} | {r['val']['geoscore']:,.0f} | "
                f"{r['test']['geoscore']:,.0f} | {r['test']['median_km']:,.0f} |"
            )
    gate(cands)


def _top1_km(c) -> np.ndarray:
    lat, lon, s, (tlat, tlon) = c
    j = np.argmax(s, axis=1)
    B = np.arange(len(j))
    return np.asarray(haversine_km(lat[B, j], lon[B, j], tlat, tlon))


def gate(cands: dict) -> None:
    """Retrieval's answer where its best cosine is ``>= t``, HierLoc's elsewhere."""
    km = {(m, sp): _top1_km(cands[(m, sp)]) for m in ("hierloc", "knn") for sp in ("val", "test")}
    sim = {sp: cands[("knn", sp)][2].max(1) for sp in ("val", "test")}

    def gs(sp: str, t: float) -> float:
        answer = np.where(sim[sp] >= t, km[("knn", sp)], km[("hierloc", sp)])
        return distance_metrics(answer)["geoscore"]

    ts = np.quantile(sim["val"], np.linspace(0, 1, 21))
    t = max(ts, key=lambda x: gs("val", x))
    share = float((sim["test"] >= t).mean())
    print(
        f"\ngate: retrieval where its best cosine >= {t:.3f} (chosen on val), HierLoc elsewhere: "
        f"val {gs('val', t):,.0f}, test {gs('test', t):,.0f} (retrieval answers "
        f"{100 * share:.0f} % of test)"
    )
    for sp in ("val", "test"):
        best = np.minimum(km[("knn", sp)], km[("hierloc", sp)])
        print(f"per-image oracle of the two, {sp}: {distance_metrics(best)['geoscore']:,.0f}")


if __name__ == "__main__":
    main()
