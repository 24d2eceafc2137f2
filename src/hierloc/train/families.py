"""What training needs to know of each model family, in one table: its config (class, the
defaults laid under a file, :func:`hierloc.config.read_config`), the input folders it trains
on (checked before any work), the ``hierloc train`` options it takes, and how it trains —
the generic loop into a run folder (``trains="run"``; ``hierloc train`` then writes the
model folder with :func:`hierloc.locate.build_model_folder`, as ``hierloc index`` does) or a
fit straight to a model folder (``trains="fit"``, its ``fit``). Either way ``hierloc train
-o`` is the model folder. The CLI, ``compare`` and ``ablate`` look
families up here; :mod:`hierloc.locate` holds the other half (each family's folder spec,
builder and loader). A new family registers one :class:`TrainingFamily` here and one
:class:`hierloc.locate.Family` there.

Variant names (``hierloc-no_text``, ``geosurge-depth3`` in ``compare`` and ``ablate``) belong
to the family before the first ``-``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hierloc.config import (
    BASELINES,
    GEOSURGE_DEFAULTS,
    BaselineTrainConfig,
    GeoSurgeTrainConfig,
    TrainConfig,
    read_config,
)
from hierloc.errors import InputError
from hierloc.train.baselines import train_baseline

INPUTS = ("hierarchy", "cells", "semantic")  # the input folders a family may train on


@dataclass(frozen=True)
class TrainingFamily:
    name: str
    config_class: type  # a dataclass whose fields are the YAML's sections
    trains: str  # "run": the generic loop into a run folder; "fit": straight to a model folder
    options: tuple[str, ...]  # hierloc train's options besides --features, --output, --set
    check_inputs: Callable[[object, dict], None] = field(repr=False)
    defaults: dict = field(default_factory=dict, repr=False)  # under the file and overrides
    bare: str | None = None  # the section of an override without a dot (``epochs=10``)
    # trains="fit": (name, cfg, hierarchy, features, output, overwrite) -> the model folder
    fit: Callable[..., Path] | None = field(default=None, repr=False)

    def config(self, path=None, overrides=()):
        """This family's config from a YAML file and overrides (one line when invalid)."""
        return read_config(self.config_class, path, list(overrides), self.defaults, self.bare)


def needs_hierarchy(what: str) -> Callable[[object, dict], None]:
    def check(cfg, inputs: dict) -> None:
        if inputs.get("hierarchy") is None:
            raise InputError(f"{what} trains on a hierarchy: pass --hierarchy")

    return check


def _geosurge_check(cfg, inputs: dict) -> None:
    if inputs.get("cells") is None:
        raise InputError("GeoSURGE trains on S2 cells: pass --cells (hierloc cells build)")
    if inputs.get("semantic") is None and cfg.model.blocks:
        raise InputError(
            "GeoSURGE's fusion needs semantic maps: pass --semantic (hierloc semantic), "
            "or --set model.blocks=0 to train without fusion"
        )


FAMILIES: dict[str, TrainingFamily] = {}


def register_training_family(family: TrainingFamily) -> TrainingFamily:
    if family.trains not in ("run", "fit") or (family.trains == "fit") != (family.fit is not None):
        raise ValueError(f"{family.name}: trains='fit' with a fit, or trains='run' without one")
    FAMILIES[family.name] = family
    return family


register_training_family(
    TrainingFamily(
        "hierloc",
        TrainConfig,
        "run",
        ("--hierarchy", "--val", "--config", "--device", "--run-dir", "--overwrite"),
        needs_hierarchy("HierLoc"),
    )
)
register_training_family(
    TrainingFamily(
        "geosurge",
        GeoSurgeTrainConfig,
        "run",
        ("--cells", "--semantic", "--val", "--config", "--device", "--run-dir", "--overwrite"),
        _geosurge_check,
        GEOSURGE_DEFAULTS,
    )
)
for _name in BASELINES:
    register_training_family(
        TrainingFamily(
            _name,
            BaselineTrainConfig,
            "fit",
            ("--hierarchy", "--config", "--overwrite"),
            needs_hierarchy("the baselines"),
            bare="baseline",
            fit=train_baseline,
        )
    )


def family_of(name: str) -> TrainingFamily:
    """The family of a model name or of a variant name (``hierloc-no_text``)."""
    fam = FAMILIES.get(name) or FAMILIES.get(name.partition("-")[0])
    if fam is None or (fam.trains == "fit" and name != fam.name):
        raise InputError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}")
    return fam


def fit_model(
    name: str,
    hierarchy,
    features,
    output,
    overrides=(),
    overwrite: bool = False,
    config=None,
    **inputs,
) -> Path:
    """Fit a ``trains="fit"`` family straight to its model folder: config, inputs and output
    checked before any work."""
    family = family_of(name)
    if family.fit is None:
        raise InputError(f"{name} trains in a run folder (hierloc train, then hierloc index)")
    cfg = family.config(config, overrides)
    family.check_inputs(cfg, {"hierarchy": hierarchy, **inputs})
    return family.fit(name, cfg, hierarchy, features, output, overwrite)
