"""One HierLoc training run from files to checkpoints (what ``hierloc train`` runs): config,
data, trainer, the run's ``sources.json``, resume from the last checkpoint, the loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hierloc.data.features import FeatureStore
from hierloc.data.manifests import write_sources
from hierloc.data.writers import check_not_input, folder_kind
from hierloc.errors import InputError
from hierloc.models.geosurge import check_grid, store_inputs
from hierloc.train.data import load_training_data
from hierloc.train.families import family_of
from hierloc.train.geosurge import GeoSurgeTrainer, load_geosurge_data
from hierloc.train.hierloc import HierLocTrainer
from hierloc.train.runtime import start_trainer


def train_run(
    hierarchy: str | Path | None,
    features: str | Path,
    output: str | Path,
    val: str | Path | None = None,
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "cpu",
    on_start: Callable | None = None,
    on_step: Callable[[dict], None] | None = None,
    model: str = "hierloc",
    cells: str | Path | None = None,
    semantic: str | Path | None = None,
):
    """Train (or resume) into ``output``; returns the :class:`~hierloc.train.loop.Trainer`.

    ``model``: ``hierloc`` (a hierarchy folder + pooled features) or ``geosurge`` (a cells
    folder + a token store ``features`` + a semantic store). ``on_start(trainer,
    resumed_from)`` is called before the first step, ``on_step(info)`` after every step
    (``info`` has the validation metrics on validation steps).
    """
    check_run_folder(output, [hierarchy, features, val, config, cells, semantic])
    family = family_of(model)
    if family.trains != "run":
        raise InputError(f"{model} is fitted, not trained in a run: hierloc train --model {model}")
    cfg = family.config(config, overrides)
    check_inputs(model, cfg, hierarchy=hierarchy, cells=cells, semantic=semantic)
    if model == "geosurge":
        check_geosurge_stores(cfg, features, semantic)
        data = load_geosurge_data(cells, features, semantic, val)
        trainer = start_trainer(GeoSurgeTrainer, cfg, data, output, device)
        if trainer.rank == 0:
            write_sources(
                Path(output), "geosurge", cells=cells, features=features, semantic=semantic, val=val
            )
    else:
        data = load_training_data(hierarchy, features, val)
        trainer = start_trainer(HierLocTrainer, cfg, data, output, device)
        if trainer.rank == 0:
            write_sources(Path(output), hierarchy=hierarchy, features=features, val=val)
    last = trainer.latest_checkpoint()
    if last is not None:
        trainer.load_checkpoint(last)
    if on_start is not None:
        on_start(trainer, last)
    for info in trainer.steps():
        if on_step is not None:
            on_step(info)
    return trainer


def check_geosurge_stores(cfg, tokens, semantic) -> None:
    """The token and semantic stores fit the model's config (before any sample is read)."""
    sem = FeatureStore.open(semantic) if semantic is not None else None
    check_grid(cfg.model, store_inputs(FeatureStore.open(tokens), sem))


def check_inputs(model: str, cfg, hierarchy=None, cells=None, semantic=None) -> None:
    """The input folders ``model`` needs under config ``cfg`` are given (before any work)."""
    family_of(model).check_inputs(
        cfg, {"hierarchy": hierarchy, "cells": cells, "semantic": semantic}
    )


RUN_FILES = ("sources.json", "config.yaml", "metrics.jsonl", "stage.json")  # stage: compare


def check_run_folder(output: str | Path, inputs) -> None:
    """A run folder is new, empty or a run (which is resumed): never one of the inputs, nor a
    folder of something else that checkpoints would be written into."""
    check_not_input(output, inputs)
    out = Path(output)
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"{out}: is a file; give --output a folder for the run")
    kind = folder_kind(out)  # a run folder has no manifest; model folders have config.yaml too
    if kind is not None or (any(out.iterdir()) and not any((out / f).exists() for f in RUN_FILES)):
        held = f"a {kind} folder" if kind else "files that are not a training run"
        raise InputError(
            f"{out}: holds {held}; give --output a new or empty folder, or a run folder to resume"
        )
