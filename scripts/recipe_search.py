"""HierLoc recipe search on the validation split: train each variant with several
seeds on the demo's data and report the validation GeoScore of beam search (mean ± std), so an
ordering counts only beyond the seed spread. The test split is never read.

    python scripts/recipe_search.py --demo runs/demo -o runs/recipe [--variants base,steps1000]
                                    [--seeds 0,1,2]

``--demo``: a folder made by ``hierloc demo`` (its data/, features/ and hierarchy/). Each run is
resumable and reused (``hierloc train``'s run folders); ``results.md`` and ``results.json`` are
rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from hierloc.train.run import train_run

# the settings every variant shares (the demo's recipe before this search: no dropout, no
# weight decay); the demo now ships steps500_reg
BASE = [
    "optim.lr=1e-3",
    "optim.riemannian_lr=1e-3",
    "optim.schedule=cosine",
    "optim.warmup_steps=20",
    "run.val_every=50",
]
# the demo's recipe: 500 steps, dropout and weight decay, the shared feature map, small anchors
SKIP = [
    "optim.max_steps=500",
    "model.dropout=0.3",
    "optim.weight_decay=0.1",
    "model.feature_skip=true",
    "model.anchor_std=0.01",
]
VARIANTS: dict[str, list[str]] = {
    "base": ["optim.max_steps=250"],  # the demo's earlier recipe
    "steps500": ["optim.max_steps=500"],
    "steps1000": ["optim.max_steps=1000"],
    "no_city_mean": ["optim.max_steps=250", "model.drop_image_mean_levels=[3]"],
    "no_fine_means": ["optim.max_steps=250", "model.drop_image_mean_levels=[2,3]"],
    "reg": ["optim.max_steps=250", "model.dropout=0.3", "optim.weight_decay=0.1"],
    "lr3e-4": ["optim.max_steps=250", "optim.lr=3e-4", "optim.riemannian_lr=3e-4"],
    "batch1024": ["optim.max_steps=250", "optim.batch_size=1024"],
    "image_only": ["optim.max_steps=250", "model.modalities=[image]"],
    "steps1000_reg": ["optim.max_steps=1000", "model.dropout=0.3", "optim.weight_decay=0.1"],
    "steps500_reg": ["optim.max_steps=500", "model.dropout=0.3", "optim.weight_decay=0.1"],
    "steps500_no_city_mean": ["optim.max_steps=500", "model.drop_image_mean_levels=[3]"],
    "steps500_lr3e-4": ["optim.max_steps=500", "optim.lr=3e-4", "optim.riemannian_lr=3e-4"],
    # the demo's recipe + the shared feature map (model.feature_skip), small anchors
    "steps500_reg_skip": [
        "optim.max_steps=500",
        "model.dropout=0.3",
        "optim.weight_decay=0.1",
        "model.feature_skip=true",
        "model.anchor_std=0.01",
    ],
    # variants of the shared map's recipe (with the shared map)
    "steps500_reg_skip_scale10": [*SKIP, "model.skip_scale=10.0"],
    "steps500_reg_skip_scale1": [*SKIP, "model.skip_scale=1.0"],
    "steps500_reg_skip_image_only": [*SKIP, "model.modalities=[image]"],
    "steps1000_reg_skip_lr3e-4": [
        *SKIP,
        "optim.max_steps=1000",
        "optim.lr=3e-4",
        "optim.riemannian_lr=3e-4",
    ],
    # the shared map's recipe with leave-one-out positives (model.loo_means)
    "steps500_reg_skip_loo": [*SKIP, "model.loo_means=true"],
    "steps500_reg_skip_d256": [
        "optim.max_steps=500",
        "model.dropout=0.3",
        "optim.weight_decay=0.1",
        "model.feature_skip=true",
        "model.anchor_std=0.01",
        "model.dim=256",
    ],
    # the demo's shipped recipe (the shared map, leave-one-out positives) and its neighbours,
    # searched again on the pixel-disjoint validation split
    "demo": [*SKIP, "model.loo_means=true"],
    "demo_steps250": [*SKIP, "model.loo_means=true", "optim.max_steps=250"],
    "demo_strong_reg": [
        *SKIP,
        "model.loo_means=true",
        "model.dropout=0.5",
        "optim.weight_decay=0.3",
    ],
    "demo_image_only": [*SKIP, "model.loo_means=true", "model.modalities=[image]"],
}


def best_val(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in rows if "val_geoscore" in r]
    best = max(vals, key=lambda r: r["val_geoscore"])
    return {
        "step": best["step"],
        "val_geoscore": best["val_geoscore"],
        "val_beam_median_km": best["val_beam_median_km"],
        "val_acc_country": best["val_acc_country"],
        "last_step": rows[-1]["step"],
        "last_val_geoscore": vals[-1]["val_geoscore"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"))
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/recipe"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    d = args.demo
    results: dict = {}
    if (args.output / "results.json").exists():
        results = json.loads((args.output / "results.json").read_text())
    for name in names:
        for seed in seeds:
            run = args.output / name / f"seed{seed}"
            key = f"{name}/seed{seed}"
            if key not in results:
                t0 = time.perf_counter()
                sets = [*BASE, *VARIANTS[name], f"run.seed={seed}"]
                train_run(
                    d / "hierarchy", d / "features", run, d / "data" / "val.parquet", overrides=sets
                )
                results[key] = best_val(run) | {"seconds": round(time.perf_counter() - t0)}
                print(key, results[key], flush=True)
            write(args.output, results)


def write(out: Path, results: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| variant | overrides | seeds | val GeoScore (best) | val median km | val country % "
        "| best step | s/run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by: dict[str, list[dict]] = {}
    for key, r in results.items():
        by.setdefault(key.split("/")[0], []).append(r)

    def ms(vals: list[float], fmt: str) -> str:
        sd = statistics.stdev(vals) if len(vals) > 1 else float("nan")
        return f"{format(statistics.mean(vals), fmt)} ± {format(sd, fmt)}"

    for name, rs in by.items():
        lines.append(
            f"| {name} | `{' '.join(VARIANTS.get(name, []))}` | {len(rs)} "
            f"| {ms([r['val_geoscore'] for r in rs], '.0f')} "
            f"| {ms([r['val_beam_median_km'] for r in rs], '.0f')} "
            f"| {ms([100 * r['val_acc_country'] for r in rs], '.1f')} "
            f"| {ms([r['step'] for r in rs], '.0f')} | {ms([r['seconds'] for r in rs], '.0f')} |"
        )
    (out / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
