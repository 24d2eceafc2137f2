"""How well a model's country confidence is calibrated on a scored split: expected calibration
error over 10 equal-width bins (ECE: the bins' |accuracy − mean confidence|, weighted by their
share of images), mean confidence against accuracy, and a reliability diagram.

    python scripts/calibration.py runs/demo/compare/hierloc/eval/predictions.parquet \\
        [-o reliability.png]

Reads ``hierloc evaluate``'s predictions.parquet (``country_confidence``, ``country_id``,
``true_country_id``).
"""

from __future__ import annotations

import argparse
import json

import pandas as pd

from hierloc.eval.metrics import calibration_error as calibration


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("predictions")
    ap.add_argument("-o", "--output", help="reliability diagram (.png)")
    args = ap.parse_args()
    p = pd.read_parquet(args.predictions)
    if "country_confidence" not in p.columns:
        raise SystemExit(f"{args.predictions}: no country_confidence column; evaluate again")
    p = p[p["country_confidence"].notna()]
    right = (p["country_id"] == p["true_country_id"]).to_numpy(dtype=float)
    res = calibration(p["country_confidence"].to_numpy(dtype=float), right)
    print(json.dumps({k: v for k, v in res.items() if k != "bins"}))
    for b, n, c, a in res["bins"]:
        print(
            f"  [{b / 10:.1f}, {(b + 1) / 10:.1f}): {n:5d} images, "
            f"confidence {c:.2f}, right {a:.2f}"
        )
    if args.output:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=110)
        ax.plot([0, 1], [0, 1], color="0.6", ls="--", label="perfect calibration")
        xs = [c for _, _, c, _ in res["bins"]]
        ys = [a for _, _, _, a in res["bins"]]
        ns = [n for _, n, _, _ in res["bins"]]
        ax.scatter(xs, ys, s=[20 + 200 * n / max(ns) for n in ns], label="a bin (area ∝ images)")
        ax.set_xlabel("country confidence")
        ax.set_ylabel("share of answers with the right country")
        ax.set_title(f"Reliability (ECE {res['ece']:.3f}, {res['n']:,} images)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
        fig.savefig(args.output, bbox_inches="tight")


if __name__ == "__main__":
    main()
