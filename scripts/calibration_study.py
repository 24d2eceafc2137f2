"""Which confidence calibration for HierLoc, chosen on the validation split: each method is fit
on four fifths of the validation images and scored on the fifth left out (5 folds, every image
scored once), per level, by expected calibration error over 10 equal-width bins (ECE), the
Brier score and how many distinct confidences it gives; the test split is read only with
``--test``, to report the chosen method.

    python scripts/calibration_study.py runs/demo/compare/hierloc/model \\
        --val runs/demo/data/val.parquet --features runs/demo/features [--test …/test.parquet]

Methods: ``raw`` (the beam's softmax of path scores at the learned τ, summed per entity);
``hist`` (10 equal-count bins → the bin's hit rate, made monotone: what ``hierloc index`` did
before); ``temp`` (one temperature per level scaling τ, fit by the Bernoulli likelihood of the
top answer being right at that level); ``temp+iso`` (then isotonic regression on the tempered
confidence); ``temp+hist``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import isotonic_regression

from hierloc.eval.metrics import calibration_error as calibration
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.locate.hierloc import TEMPERATURE_GRID, Geolocator, level_confidences

TEMPS = TEMPERATURE_GRID  # the library's grid


def outcomes(geo: Geolocator, data: Path, features: Path):
    """``(paths, scores, right (N, L))`` of the beam on a labelled split."""
    from hierloc.data.features import FeatureStore
    from hierloc.hierarchy.labels import metadata_entities

    truth = metadata_entities(data)
    feats, ok = FeatureStore.open(features).lookup(truth["id"].to_numpy(dtype=object))
    truth = truth[ok].reset_index(drop=True)
    res = geo.search(feats, top_k=1, beam=10)
    z = geo.embed(feats)
    q, qn2 = geo.index.queries(z)
    level_scores = []  # (N, E_l): the query's score against every entity of the level
    for lv in range(geo.index.levels):
        extra = None if qn2 is None else qn2[:, None]
        level_scores.append(geo.index.scores(q @ geo.index.vectors(lv).T, extra).double())
    res.level_scores = level_scores
    ent = geo._loaded.entities
    right = []
    for lv, name in enumerate(LEVEL_NAMES[: res.paths.shape[2]]):
        sub = ent[ent["level"] == lv]
        pos = dict(zip(sub["entity_id"], sub["row"], strict=True))
        true = truth[f"{name}_id"].map(pos).fillna(-1).astype(np.int64).to_numpy()
        right.append(res.paths[:, 0, lv].numpy() == true)
    return (res.paths, res.level_scores), res.scores, np.stack(right, 1).astype(float)


KIND = {"kind": "beam"}


def conf_at(paths, scores, tau: float, lv: int) -> np.ndarray:
    """The top answer's confidence at level ``lv``: the beam's (``beam``), or the softmax over
    every entity of the level of the chosen entity (``level``)."""
    paths, level_scores = paths
    if KIND["kind"] == "level":
        p = torch.softmax(level_scores[lv] / tau, dim=1)
        return p.gather(1, paths[:, 0, lv : lv + 1].long()).squeeze(1).numpy()
    return level_confidences(paths, scores, tau)[:, 0, lv].numpy().astype(float)


def take(paths, rows):
    return (paths[0][rows], [s[rows] for s in paths[1]])


def auroc(c: np.ndarray, y: np.ndarray) -> float:
    """P(a right answer's confidence > a wrong one's), ties half."""
    pos, neg = c[y > 0.5], c[y <= 0.5]
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    return round(float(gt), 4)


def nll(c: np.ndarray, y: np.ndarray) -> float:
    c = np.clip(c, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(c) + (1 - y) * np.log(1 - c)).mean())


def fit_temp(paths, scores, y, tau, lv) -> float:
    return float(min(TEMPS, key=lambda t: nll(conf_at(paths, scores, tau * t, lv), y)))


def fit_map(x: np.ndarray, y: np.ndarray, kind: str):
    """A monotone map x → P(right): ``hist`` (10 equal-count bins) or ``iso`` (isotonic)."""
    if kind == "hist":
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 11)[1:-1]))
        which = np.searchsorted(edges, x, side="right")
        hits = np.bincount(which, y, minlength=len(edges) + 1)
        count = np.bincount(which, minlength=len(edges) + 1)
        values = isotonic_regression((hits + 1) / (count + 2), weights=count + 2).x
        return lambda z: values[np.searchsorted(edges, z, side="right")]
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    fitted = isotonic_regression(ys).x
    fitted = (fitted * len(ys) + 0.5) / (len(ys) + 1)  # never exactly 0 or 1
    return lambda z: np.interp(z, xs, fitted)


def method(name: str, tr, te, tau: float, lv: int) -> np.ndarray:
    """Fit ``name`` on ``tr`` = (paths, scores, y); confidences for ``te``'s images."""
    (p1, s1, y1), (p2, s2) = tr, te
    if name == "raw":
        return conf_at(p2, s2, tau, lv)
    t = fit_temp(p1, s1, y1, tau, lv) if name.startswith("temp") else 1.0
    x1, x2 = conf_at(p1, s1, tau * t, lv), conf_at(p2, s2, tau * t, lv)
    if name == "temp":
        return x2
    return fit_map(x1, y1, name.split("+")[-1] if "+" in name else name)(x2)


METHODS = ("raw", "hist", "temp", "temp+iso", "temp+hist")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--val", type=Path, required=True)
    ap.add_argument("--features", type=Path, required=True)
    ap.add_argument("--test", type=Path)
    ap.add_argument("--method", default="temp", help="the method reported on --test")
    ap.add_argument("--kind", default="level", choices=["beam", "level"])
    args = ap.parse_args()
    KIND["kind"] = args.kind
    geo = Geolocator.load(args.model)
    geo.manifest = {k: v for k, v in geo.manifest.items() if k != "calibration"}
    tau = geo.raw_temperature
    paths, scores, right = outcomes(geo, args.val, args.features)
    n = len(right)
    fold = np.random.default_rng(0).permutation(n) % 5
    table = {}
    for lv, name in enumerate(LEVEL_NAMES[: right.shape[1]]):
        for m in METHODS:
            conf = np.zeros(n)
            for f in range(5):
                a, b = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
                tr = (take(paths, a), scores[a], right[a, lv])
                conf[b] = method(m, tr, (take(paths, b), scores[b]), tau, lv)
            y = right[:, lv]
            r = calibration(conf, y)
            table[f"{name}/{m}"] = {
                "auroc": auroc(conf, y),
                "ece": round(r["ece"], 4),
                "brier": round(float(((conf - y) ** 2).mean()), 4),
                "distinct": int(len(np.unique(np.round(conf, 4)))),
                "accuracy": round(r["accuracy"], 4),
                "mean_confidence": round(r["mean_confidence"], 4),
            }
            print(f"val 5-fold  {name:9s} {m:10s}", table[f"{name}/{m}"], flush=True)
    if args.test:
        tp, ts, ty = outcomes(geo, args.test, args.features)
        for lv, name in enumerate(LEVEL_NAMES[: right.shape[1]]):
            conf = method(args.method, (paths, scores, right[:, lv]), (tp, ts), tau, lv)
            r = calibration(conf, ty[:, lv])
            print(
                f"test {args.method} {name:9s}",
                json.dumps({k: round(v, 4) for k, v in r.items() if k != "bins" and k != "n"}),
            )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
