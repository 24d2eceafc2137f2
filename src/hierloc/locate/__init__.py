"""Everything that answers "where is this image" from a model folder.

* :func:`load_locator` — any model folder → a :class:`~hierloc.locate.types.Locator`, by the
  ``format`` its manifest declares (one reader: :func:`hierloc.data.manifests.read_model_manifest`).
* :func:`build_model_folder` — a training run (or one of its checkpoints) → a model folder, by
  the model the run trained (its ``sources.json``).

Families register a loader (and, when they train through ``hierloc train``, a builder) with
:func:`register_family`, the way ``models/`` registers models; the built-in ones are HierLoc
(``hierloc-index``), GeoSURGE (``hierloc-geosurge``) and the baselines (``hierloc-baseline``,
which ``hierloc train --model knn|classify|regress|zeroshot`` writes directly). Adding a family
is one module here: nothing in eval, serve or the CLI changes.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hierloc.data.formats import MODEL_FOLDER_KINDS
from hierloc.errors import InputError
from hierloc.locate.types import Answer, Locator, Place, Prediction, Rejected, answer_rows

if TYPE_CHECKING:
    from hierloc.data.spec import Spec


@dataclass(frozen=True)
class Family:
    format: str  # manifest.json's "format"
    version: int
    load: Callable[..., Locator]  # (path, device=, manifest=) -> Locator
    model: str | None = None  # the run's model name (sources.json) it builds from, if any
    build: Callable[..., Path] | None = None  # (checkpoint, run, output, **options) -> folder
    options: tuple[str, ...] = ("overwrite",)  # the keyword options ``build`` takes
    spec: Callable[[], Spec] | None = None  # the folder's files, checked before ``load``


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make a family's folders loadable (and replaceable by one another with --overwrite)."""
    _FAMILIES[family.format] = family
    if family.format not in MODEL_FOLDER_KINDS:
        MODEL_FOLDER_KINDS.append(family.format)
    return family


def _builtin_families() -> None:
    """Register HierLoc, GeoSURGE and the baselines on first use: importing this package stays
    free of torch (the ONNX engine and the predictions document need only its types)."""
    if _BUILTINS_DONE:
        return
    _BUILTINS_DONE.append(True)
    from hierloc.locate import baselines, geosurge, hierloc

    register_family(
        Family(
            hierloc.FORMAT,
            hierloc.VERSION,
            hierloc.Geolocator.load,
            "hierloc",
            hierloc.build_model_folder,
            ("overwrite", "hierarchy", "half", "calibrate_on"),
            hierloc.folder_spec,
        )
    )
    register_family(
        Family(
            geosurge.FORMAT,
            geosurge.VERSION,
            geosurge.GeoSurgeLocator.load,
            "geosurge",
            geosurge.build_model_folder,
            spec=geosurge.folder_spec,
        )
    )
    register_family(
        Family(
            baselines.FORMAT,
            baselines.VERSION,
            baselines.BaselineLocator.load,
            spec=baselines.folder_spec,
        )
    )


_BUILTINS_DONE: list[bool] = []


def formats() -> list[str]:
    _builtin_families()
    return sorted(_FAMILIES)


def load_locator(path: str | Path, device: str = "cpu") -> Locator:
    """Open any model folder (its manifest's ``format`` picks the family; the version is
    checked against the family's, and the folder against the family's spec — every file
    present, of its dtype and shape, the weights fitting the config — before it loads)."""
    from hierloc.data.manifests import read_model_manifest
    from hierloc.data.spec import check_folder

    _builtin_families()
    path = Path(path)
    manifest = read_model_manifest(path)
    fam = _FAMILIES.get(manifest["format"])
    if fam is None:
        close = difflib.get_close_matches(manifest["format"], list(_FAMILIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"{path}: model-folder format {manifest['format']!r}{hint} is none of "
            f"{formats()}; build the folder with hierloc index or hierloc train"
        )
    if manifest.get("version") != fam.version:
        raise InputError(
            f"{path}: {fam.format} version {manifest.get('version')} but this "
            f"hierloc reads version {fam.version}; rebuild the folder with "
            "hierloc index (or train the baseline again)"
        )
    if fam.spec is not None:
        check_folder(path, fam.spec(), manifest)
    return fam.load(path, device=device, manifest=manifest)


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``(checkpoint folder, run folder)`` from either: a run folder gives its ``best``
    checkpoint, else its latest ``ckpt-*``."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path, path.parent
    if not path.is_dir():
        raise InputError(f"{path}: no such run or checkpoint folder")
    for cand in [path / "best", *sorted(path.glob("ckpt-*"), reverse=True)]:
        if (cand / "model.safetensors").exists():
            return cand, path
    raise InputError(f"{path}: holds no checkpoint (model.safetensors); train with hierloc train")


def build_model_folder(run: str | Path, output: str | Path, **options) -> Path:
    """A run folder (its best checkpoint, else its latest) or a checkpoint folder → a model
    folder at ``output``; ``options`` are the family's (HierLoc: ``hierarchy``, ``half``,
    ``calibrate_on``; all: ``overwrite``)."""
    from hierloc.data.manifests import run_model

    _builtin_families()
    ckpt, run_dir = resolve_checkpoint(run)
    model = run_model(run_dir)
    builders = {f.model: f for f in _FAMILIES.values() if f.build is not None}
    if model not in builders:
        raise InputError(
            f"{run_dir}: trained model {model!r} has no model-folder builder; "
            f"known: {sorted(builders)}"
        )
    fam = builders[model]
    extra = sorted(k for k, v in options.items() if k not in fam.options and v not in (None, False))
    if extra:
        raise InputError(
            f"{', '.join(extra)}: not an option for {model} runs "
            f"(they take {', '.join(fam.options)})"
        )
    options = {k: v for k, v in options.items() if k in fam.options}
    return fam.build(ckpt, run_dir, output, **options)


__all__ = [
    "Answer",
    "Family",
    "Locator",
    "Place",
    "Prediction",
    "Rejected",
    "answer_rows",
    "build_model_folder",
    "formats",
    "load_locator",
    "register_family",
    "resolve_checkpoint",
]
