"""One HierLoc training run from files to checkpoints (what ``hierloc train`` runs): config,
data, trainer, the run's ``sources.json``, resume from the last checkpoint, the loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def train_run(
    hierarchy: str | Path,
    features: str | Path,
    output: str | Path,
    val: str | Path | None = None,
    config: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    device: str = "cpu",
    on_start: Callable | None = None,
    on_step: Callable[[dict], None] | None = None,
):
    """Train (or resume) into ``output``; returns the :class:`~hierloc.train.loop.Trainer`.

    ``on_start(trainer, resumed_from)`` is called before the first step, ``on_step(info)``
    after every step (``info`` has the validation metrics on validation steps).
    """
    from hierloc.index import write_sources
    from hierloc.train.config import load_config
    from hierloc.train.data import load_training_data
    from hierloc.train.loop import Trainer

    cfg = load_config(config, list(overrides))
    data = load_training_data(hierarchy, features, val)
    trainer = Trainer(cfg, data, output, device=device)
    if trainer.rank == 0:
        write_sources(Path(output), Path(hierarchy), Path(features),
                      None if val is None else Path(val))  # fmt: skip
    last = trainer.latest_checkpoint()
    if last is not None:
        trainer.load_checkpoint(last)
    if on_start is not None:
        on_start(trainer, last)
    for info in trainer.steps():
        if on_step is not None:
            on_step(info)
    return trainer
