"""``hierloc train``: HierLoc, GeoSURGE (one process or torchrun) and the baselines."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import (
    VerboseOpt,
    app,
    handles_errors,
    row_progress,
)


def _val_line(info: dict) -> str:
    """``val country 40.1% (28.1%) region … , GeoScore 1,234, median 612 km``: per level the
    accuracy (the majority rate), or per GeoSURGE partition its accuracy; then the GeoScore
    and median error of the answers when the validation gives them."""
    parts = []
    for k, v in info.items():
        if k.startswith("val_acc_p"):  # a GeoSURGE partition
            parts.append(f"{k[8:]} {100 * v:.1f}%")
        elif k.startswith("val_acc_") and not k.startswith("val_acc_seen_"):
            level = k[8:]
            parts.append(
                f"{level} {100 * v:.1f}% ({100 * info.get('val_majority_' + level, 0.0):.1f}%)"
            )
    line = f"val {' '.join(parts)}"
    if "val_geoscore" in info:
        line += f", GeoScore {info['val_geoscore']:,.0f}"
    return line + f", median {info.get('val_median_km', float('nan')):,.0f} km"


@app.command()
@handles_errors
def train(
    features: Annotated[
        Path,
        typer.Option(
            help="Feature store holding the training (and validation) images (GeoSURGE: a token "
            "store, hierloc extract --tokens).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Run folder: checkpoints, config.yaml, metrics.jsonl.",
            show_default=False,
        ),
    ],
    val: Annotated[
        Path | None,
        typer.Option(
            help="Validation metadata with labels (e.g. bluemarble's val.parquet).",
            show_default=False,
        ),
    ] = None,
    hierarchy: Annotated[
        Path | None,
        typer.Option(
            help="Hierarchy folder (built with --features and, for the text modality, "
            "--text-encoder). HierLoc and the baselines.",
            show_default=False,
        ),
    ] = None,
    cells: Annotated[
        Path | None,
        typer.Option(
            help="GeoSURGE: S2 cells folder (hierloc cells build on the training metadata).",
            show_default=False,
        ),
    ] = None,
    semantic: Annotated[
        Path | None,
        typer.Option(help="GeoSURGE: semantic map store (hierloc semantic).", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML config (model, loss, optim, run sections).", show_default=False),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Dotted override, repeatable: --set optim.lr=1e-3 --set model.attention=false",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="hierloc, geosurge (S2 cells + semantic fusion: --cells, --semantic, a token "
            "store as --features), or a baseline: knn (retrieval), classify (softmax over "
            "cities), regress (coordinates), zeroshot (nearest city mean "
            "embedding), prior (the training medoid for every photo: what learning nothing "
            "scores). A baseline writes its model folder to --output; its "
            "--set keys: epochs, lr, hidden, dropout, batch_size, seed."
        ),
    ] = "hierloc",
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Baselines: replace an existing model folder at --output (HierLoc and "
            "GeoSURGE resume a run folder instead).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train HierLoc, GeoSURGE or a baseline (--model) on precomputed features (resumes from the run folder's last checkpoint).

    GeoSURGE: hierloc train --model geosurge --cells CELLS --features TOKENS --semantic MAPS [--val VAL] -o RUN. Paper defaults (768-d cell embeddings, 7 partitions, 3 fusion blocks, latent 64, τ 0.07 learned per partition, AdamW 1e-4, wd 1e-4, ×0.5 per epoch, early stopping after 4 validations without a better GeoScore); ablations: model.head=classify (Table VI), model.depth (Table VII), model.blocks (Table VIII); model.rgb_dim=N projects the tokens to N dims first (CPU-sized).

    HierLoc: paper defaults (lr 2e-4, K = 0.8, τ 0.1, λ 1.0, Laplace kernel, gradient clipping) except the batch size (256 instead of 16, for speed on CPU). Every ablation is a config switch: model.manifold, model.attention, model.modalities, model.drop_image_mean_levels, model.K, loss.loss, loss.kernel, loss.lam, loss.tau_init, loss.squared_distance. Validation prints each level's accuracy with the majority-class rate in brackets. optim.sampled_entities=N (off by default) trains on N sampled entities per level per step: faster at the paper's scale, an approximation.
    """  # noqa: E501
    from hierloc.errors import InputError
    from hierloc.train.families import family_of

    given = {
        "--val": val is not None,
        "--hierarchy": hierarchy is not None,
        "--cells": cells is not None,
        "--semantic": semantic is not None,
        "--config": config is not None,
        "--device": device != "cpu",
        "--overwrite": overwrite,
    }
    family = family_of(model)
    takes = family.options
    stray = [k for k, v in given.items() if v and k not in takes]
    if stray:
        raise InputError(
            f"{', '.join(stray)}: not an option of --model {model} (it takes --features, "
            f"--output, --set{''.join(', ' + t for t in takes)})"
        )
    if family.trains == "fit":
        from hierloc.train.families import fit_model

        out = fit_model(
            model, hierarchy, features, output, set_ or [], overwrite=overwrite, config=config
        )
        typer.echo(json.dumps({"model": model, "folder": str(out)}, indent=2))
        return
    _train_in_run(hierarchy, features, output, val, config, set_ or [], device, model, cells,
                  semantic)  # fmt: skip


def _train_in_run(hierarchy, features, output, val, config, sets, device, model, cells, semantic):
    """The generic loop's families: train (or resume) with a progress bar and a validation
    line per validation step; the summary as JSON at the end."""
    from hierloc.train.run import train_run
    from hierloc.train.runtime import leave_process_group

    with contextlib.ExitStack() as stack:
        bar = {}

        def start(trainer, last):
            if last is not None:
                typer.echo(f"resuming from {last} (step {trainer.step})", err=True)
            bar["update"] = stack.enter_context(row_progress("training", trainer.total_steps))

        def step(info):
            bar["update"](info["step"])
            if "val_loss" in info:
                typer.echo(
                    f"step {info['step']}: loss {info['loss']:.3f}, {_val_line(info)}", err=True
                )

        trainer = train_run(
            hierarchy, features, output, val, config, sets, device, on_start=start,
            on_step=step, model=model, cells=cells, semantic=semantic,
        )  # fmt: skip
    leave_process_group(trainer.rank, trainer.world)
    if trainer.rank == 0:
        summary = {"run": str(output), "steps": trainer.step, **trainer.validate()}
        typer.echo(json.dumps(summary, indent=2))
