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
            help="The model folder the training ends with (every family; hierloc predict, "
            "evaluate and serve read it).",
            show_default=False,
        ),
    ],
    run: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="HierLoc and GeoSURGE: the run folder (checkpoints, config.yaml, "
            "metrics.jsonl), resumed from its last checkpoint when the command is run again; "
            "default: the output's path with .run appended (model → model.run). hierloc "
            "index RUN -o MODEL rebuilds a model folder from it.",
            show_default=False,
        ),
    ] = None,
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
            "scores). The baselines' --set keys: epochs, lr, weight_decay, hidden, dropout, "
            "batch_size, seed, temperature."
        ),
    ] = "hierloc",
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an existing model folder at --output (without it, an existing one "
            "is refused before any work).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train HierLoc, GeoSURGE or a baseline (--model) on precomputed features into a model folder (-o); HierLoc and GeoSURGE keep their checkpoints in a run folder (--run-dir) and resume from its last one.

    GeoSURGE: hierloc train --model geosurge --cells CELLS --features TOKENS --semantic MAPS [--val VAL] -o MODEL. Paper defaults (768-d cell embeddings, 7 partitions, 3 fusion blocks, latent 64, τ 0.07 learned per partition, AdamW 1e-4, wd 1e-4, ×0.5 per epoch, early stopping after 4 validations without a better GeoScore); ablations: model.head=classify (Table VI), model.depth (Table VII), model.blocks (Table VIII); model.rgb_dim=N projects the tokens to N dims first (CPU-sized).

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
        "--run-dir": run is not None,
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
    from hierloc.data.formats import MODEL_FOLDER_KINDS
    from hierloc.data.writers import check_folder_output

    if output.is_dir() and any(output.glob("ckpt-*")):
        raise InputError(
            f"{output}: a training run (checkpoints); --output names the model folder the "
            f"training ends with: resume this run with --run-dir {output} -o MODEL"
        )
    run = run if run is not None else output.with_name(output.name + ".run")
    inputs = [hierarchy, features, val, config, cells, semantic, run]
    overwrite = overwrite or _built_from(output, run)  # a rerun replaces its own model folder
    check_folder_output(output, overwrite, MODEL_FOLDER_KINDS, inputs)
    _train_in_run(hierarchy, features, run, val, config, set_ or [], device, model, cells,
                  semantic, output, overwrite)  # fmt: skip


def _built_from(model: Path, run: Path) -> bool:
    """Whether ``model`` is a model folder built from a checkpoint of ``run``."""
    try:
        manifest = json.loads((model / "manifest.json").read_text())
        return Path(manifest["checkpoint"]).resolve().parent == run.resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _train_in_run(
    hierarchy, features, run, val, config, sets, device, model, cells, semantic, output, overwrite
):
    """The generic loop's families: train (or resume) with a progress bar and a validation
    line per validation step, then the model folder from the run; the summary as JSON."""
    from hierloc.locate import build_model_folder
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
            hierarchy, features, run, val, config, sets, device, on_start=start,
            on_step=step, model=model, cells=cells, semantic=semantic,
        )  # fmt: skip
    leave_process_group(trainer.rank, trainer.world)
    if trainer.rank == 0:
        summary = {"run": str(run), "steps": trainer.step, **trainer.validate()}
        build_model_folder(run, output, overwrite=overwrite)
        typer.echo(json.dumps({"model": model, "folder": str(output), **summary}, indent=2))
