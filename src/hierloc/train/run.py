"""One HierLoc training run from files to checkpoints (what ``hierloc train`` runs): config,
data, trainer, the run's ``sources.json``, resume from the last checkpoint, the loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from hierloc.errors import InputError


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
    from hierloc.index import write_sources
    from hierloc.train.config import load_config

    cfg = load_config(config, list(overrides), model=model)
    if model == "geosurge":
        from hierloc.train.geosurge import GeoSurgeTrainer, load_geosurge_data

        if cells is None:
            raise InputError("GeoSURGE trains on S2 cells: pass --cells (hierloc cells build)")
        if semantic is None and cfg.model.blocks:
            raise InputError(
                "GeoSURGE's fusion needs semantic maps: pass --semantic (hierloc semantic), "
                "or --set model.blocks=0 to train without fusion"
            )
        data = load_geosurge_data(cells, features, semantic, val)
        trainer = GeoSurgeTrainer(cfg, data, output, device=device)
        if trainer.rank == 0:
            write_sources(Path(output), "geosurge", cells=cells, features=features,
                          semantic=semantic, val=val)  # fmt: skip
    else:
        from hierloc.train.data import load_training_data
        from hierloc.train.loop import Trainer

        if hierarchy is None:
            raise InputError("HierLoc trains on a hierarchy: pass --hierarchy")
        data = load_training_data(hierarchy, features, val)
        trainer = Trainer(cfg, data, output, device=device)
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
