"""Model-folder manifests, a run's ``sources.json`` and the encoder description: one reader.

* ``MODEL_DIR/manifest.json`` — every model folder's (``format``, ``version`` and the family's
  keys); :func:`read_model_manifest` is the one reader (missing, damaged, another format or
  version: one :class:`InputError` naming the folder and how to rebuild it).
* ``RUN/sources.json`` — written by ``hierloc train``: the model name and the absolute paths of
  the run's inputs, so that ``hierloc index`` finds them (:func:`write_sources`,
  :func:`read_sources`).
* a feature store's ``encoder`` entry → ``{"name": …, …}`` or ``None``
  (:func:`encoder_description`).
"""

from __future__ import annotations

import json
from pathlib import Path

from hierloc.data.artifacts import read_json
from hierloc.errors import InputError

SOURCES = "sources.json"
REBUILD = "rebuild the folder with hierloc index RUN -o MODEL_DIR --overwrite"


def write_sources(run_dir: Path, model: str = "hierloc", **paths: Path | None) -> None:
    """Record a run's model and inputs (absolute paths) so that ``hierloc index`` finds them."""
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"model": model} | {
        k: None if v is None else str(Path(v).resolve()) for k, v in paths.items()
    }
    (run_dir / SOURCES).write_text(json.dumps(data, indent=2) + "\n")


def read_sources(run_dir: str | Path) -> dict:
    """A run's ``sources.json`` (``{}`` when the run has none: a checkpoint from elsewhere)."""
    path = Path(run_dir) / SOURCES
    if not path.exists():
        return {}
    return read_json(path, "run's list of inputs", "train the run again with hierloc train")


def run_model(run_dir: str | Path) -> str:
    """The model a run trained (``hierloc`` for runs without ``sources.json``)."""
    return str(read_sources(run_dir).get("model") or "hierloc")


def encoder_description(value) -> dict | None:
    """A feature store's ``encoder`` entry as ``{"name": …, …}``, or ``None`` when unknown."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or value.get("name") in (None, "", "unknown"):
        return None
    return value


def read_model_manifest(
    path: str | Path, fmt: str | None = None, version: int | None = None, fix: str = REBUILD
) -> dict:
    """``path/manifest.json`` of a model folder, checked: it exists and is a JSON object with a
    ``format``; when given, that ``format`` is ``fmt`` and its ``version`` is ``version``."""
    path = Path(path)
    mpath = path / "manifest.json"
    if not path.is_dir():
        raise InputError(
            f"{path}: no such model folder; build one with hierloc index RUN -o "
            "MODEL_DIR or hierloc train --model BASELINE -o MODEL_DIR"
        )
    if not mpath.exists():
        raise InputError(
            f"{path}: not a model folder (no manifest.json); build one with "
            "hierloc index RUN -o MODEL_DIR"
        )
    manifest = read_json(mpath, "model-folder manifest", fix)
    if not isinstance(manifest.get("format"), str):
        raise InputError(f"{mpath}: no 'format' key, so not a model folder's manifest; {fix}")
    if fmt is not None and manifest["format"] != fmt:
        raise InputError(f"{path}: a {manifest['format']!r} folder, not {fmt!r}")
    if version is not None and manifest.get("version") != version:
        raise InputError(
            f"{path}: {manifest['format']} version {manifest.get('version')} but "
            f"this hierloc reads version {version}; {fix}"
        )
    return manifest
