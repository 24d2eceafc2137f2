"""Learning curve: HierLoc and the baselines at a larger training set than the
demo's, on the same benchmark (same geographic blocks per split; on the pixel-disjoint split
the validation and test patches are the demo's at every size, since the held-out samples are
chosen before the training sample), same encoder, same recipe per epoch.

    python scripts/learning_curve.py -o runs/curve --train 20000 [--models hierloc,knn,…]
                                     [--steps 1000] [--seed 1] [--set KEY=VALUE]...

Builds ``OUT/nTRAIN/{data,features,hierarchy}`` (each reused when complete), then runs
``hierloc compare`` on them and writes ``OUT/nTRAIN/compare/compare.md``. HierLoc trains the
demo's recipe with ``--steps`` (default: the demo's 500 steps scaled by the training size, so
the number of epochs matches the demo's); GeoSURGE trains the demo's 6 epochs, validating once
an epoch (the demo's ``run.val_every=39`` is its epoch), so early stopping waits 4 epochs at
every size. ``--seed S`` (S > 0) trains HierLoc and GeoSURGE with ``run.seed=S`` into
``OUT/nTRAIN/compare-seedS`` (run it with ``--models hierloc,geosurge`` for the learned
models' seed spread; the data are the same, and the baselines are deterministic). ``--set``
adds HierLoc overrides after the demo's recipe (e.g. ``optim.sampled_entities=4096`` at the
full size, where embedding every entity each step is most of a step's time).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hierloc.workflows.compare import compare
from hierloc.workflows.demo import (
    BASELINE_SET,
    CELLS_TAU_MAX,
    CELLS_TAU_MIN,
    DEMO_COUNTS,
    GEOSURGE_SET,
    HIERLOC_SET,
    geosurge_inputs,
    prepare_benchmark,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/curve"))
    ap.add_argument("--train", type=int, default=20_000)
    ap.add_argument("--models", default="hierloc,geosurge,knn,zeroshot,classify,prior")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], dest="sets")
    a = ap.parse_args()
    counts = DEMO_COUNTS | {"train": a.train}
    out = a.output / f"n{a.train}"
    data, feats, hier = prepare_benchmark(out, counts, lambda m: print(m, flush=True))
    steps = a.steps or round(500 * a.train / DEMO_COUNTS["train"])
    hset = [s for s in HIERLOC_SET if not s.startswith("optim.max_steps")]
    hset.append(f"optim.max_steps={steps}")
    if a.seed:
        hset.append(f"run.seed={a.seed}")
    hset += a.sets
    models = a.models.split(",")
    say = lambda m: print(m, flush=True)  # noqa: E731
    gs = None
    if "geosurge" in models:
        gs = geosurge_inputs(out, data, counts, (CELLS_TAU_MAX, CELLS_TAU_MIN), say)
    over = {m: BASELINE_SET for m in models}
    over["hierloc"] = hset
    # GeoSURGE validates once an epoch at every size (the demo's run.val_every=39 is its
    # epoch), so its early stopping waits the paper's 4 epochs, not 4 × 39 steps
    gset = [s for s in GEOSURGE_SET if not s.startswith("run.val_every=")]
    gset.append("run.val_every=epoch")
    over["geosurge"] = gset + ([f"run.seed={a.seed}"] if a.seed else [])
    results = compare(
        models,
        hier,
        feats,
        data,
        out / ("compare" if not a.seed else f"compare-seed{a.seed}"),
        val=data / "val.parquet",
        overrides={m: over[m] for m in models},
        on_event=say,
        geosurge=gs,
    )
    print(
        json.dumps(
            {
                m: {k: r["entity"][k] for k in ("geoscore", "median_km", "acc_country")}
                for m, r in results.items()
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
