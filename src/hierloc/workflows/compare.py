"""``hierloc compare``: train and evaluate several models on the same features, split and
metrics, and write one side-by-side table.

Layout of the output folder: ``NAME/run`` (HierLoc's checkpoints), ``NAME/model`` (the model
folder), ``NAME/eval`` (``hierloc evaluate``'s report) per model, then ``compare.json``
(``{model: {the hierloc score JSON keys}}``, entity protocol), ``compare_osv5m.json``,
``compare.md`` and ``error_cdf.png`` (all models). Each stage records what it was made from
(``stage.json``); a rerun with the same inputs reuses it, so only what changed is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from hierloc.data.writers import check_not_input, write_file_atomic
from hierloc.errors import InputError
from hierloc.eval.evaluate import (
    default_split,
    evaluate,
    metrics_table,
    names_images,
    split_file,
)
from hierloc.eval.plots import error_cdf_plot
from hierloc.hierarchy.pipeline import file_sha256
from hierloc.locate import build_model_folder
from hierloc.train.families import FAMILIES, family_of, fit_model
from hierloc.train.run import train_run

log = logging.getLogger(__name__)
DEFAULT_MODELS = tuple(n for n in FAMILIES if n != "geosurge")


def stage_done(folder: Path, key: dict) -> bool:
    """Whether ``folder`` was made from ``key`` (its ``stage.json``)."""
    try:
        return json.loads((folder / "stage.json").read_text()) == key
    except (OSError, json.JSONDecodeError):
        return False


def mark_stage(folder: Path, key: dict) -> None:
    """Record that ``folder`` is complete and what it was made from."""
    write_file_atomic(folder / "stage.json", json.dumps(key, indent=2, sort_keys=True) + "\n")


def folder_digest(folder: Path) -> str:
    """SHA-256 over the names and contents of the files of a (flat) model folder but its
    ``stage.json``; subfolders, such as the reports ``hierloc evaluate`` writes there by
    default, are not the model."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        if f.name == "stage.json":
            continue
        h.update(f.name.encode() + b"\0")
        h.update(file_sha256(f).encode())
    return h.hexdigest()


def _model_key(name: str, args: dict) -> dict:
    return {"model": name, **{k: str(v) if isinstance(v, Path) else v for k, v in args.items()}}


def is_geosurge(name: str) -> bool:
    return family_of(name).name == "geosurge"


def check_geosurge_inputs(geosurge: dict | None) -> None:
    if not geosurge or not geosurge.get("cells") or not geosurge.get("tokens"):
        raise InputError(
            "geosurge needs --cells, --tokens and --semantic (hierloc cells "
            "build, hierloc extract --tokens, hierloc semantic)"
        )


def check_models(
    models: list[str],
    config: Path | None,
    overrides: dict[str, list[str]],
    geosurge: dict | None,
    hierarchy: Path | None,
) -> None:
    """Every model name known and every model's config valid — before anything is trained or
    written."""
    if not models:
        raise InputError("--models: name at least one model")
    for name in models:
        family = family_of(name)  # one line for an unknown name
        over = overrides.get(name, [])
        if family.name == "geosurge":
            check_geosurge_inputs(geosurge)
        cfg = family.config(config if family.name == "hierloc" else None, over)
        family.check_inputs(cfg, {"hierarchy": hierarchy, **(geosurge or {})})


def build_model(
    name: str,
    folder: Path,
    hierarchy: Path,
    features: Path,
    val: Path | None,
    config: Path | None,
    overrides: list[str],
    device: str = "cpu",
    on_step: Callable | None = None,
    geosurge: dict | None = None,
) -> Path:
    """Train model ``name`` (HierLoc, GeoSURGE or a baseline) into ``folder/model`` unless
    done. ``geosurge``: GeoSURGE's inputs, ``{"cells", "tokens", "semantic"}`` folders."""
    key = _model_key(
        name,
        {
            "hierarchy": str(Path(hierarchy).resolve()),
            "features": str(Path(features).resolve()),
            "val": None if val is None else str(Path(val).resolve()),
            "config": None if config is None else Path(config).read_text(),
            "overrides": list(overrides),
        },
    )
    if is_geosurge(name):
        check_geosurge_inputs(geosurge)
        key["geosurge"] = {
            k: None if v is None else str(Path(v).resolve()) for k, v in geosurge.items()
        }
    model_dir = folder / "model"
    if stage_done(model_dir, key):
        log.info("%s: reusing %s", name, model_dir)
        return model_dir
    family = family_of(name)
    if family.trains == "run":
        run = folder / "run"
        if run.exists() and not stage_done(run, key):
            shutil.rmtree(run)  # trained from other inputs: start over
        run.mkdir(parents=True, exist_ok=True)
        mark_stage(run, key)
        if is_geosurge(name):
            train_run(
                None,
                geosurge["tokens"],
                run,
                val,
                config,
                overrides,
                device,
                on_step=on_step,
                model="geosurge",
                cells=geosurge["cells"],
                semantic=geosurge.get("semantic"),
            )
        else:
            train_run(hierarchy, features, run, val, config, overrides, device, on_step=on_step)
        build_model_folder(run, model_dir, overwrite=True)
    else:
        fit_model(name, hierarchy, features, model_dir, overrides, overwrite=True)
    mark_stage(model_dir, key)
    return model_dir


def evaluate_model(
    model_dir: Path,
    data: Path,
    out: Path,
    split: str | None,
    features: Path | None,
    search: str = "beam",
    beam: int = 10,
) -> dict:
    split = default_split(data, split)  # in the stage key as evaluate reads it
    manifest = (model_dir / "manifest.json").read_text()
    # GeoSURGE is evaluated as its paper does, each image averaged over ten crops, when the
    # split names its images (a path column); otherwise on its stored centre-crop tokens —
    # metrics.json says which ("ten_crop")
    ten_crop = json.loads(manifest).get("format") == "hierloc-geosurge" and names_images(
        split_file(data, split)
    )
    key = {
        "manifest": manifest,
        # a model retrained in place keeps its manifest (same architecture, same checkpoint
        # path): its files' digest tells the new weights from the old
        "files": folder_digest(model_dir),
        "data": str(Path(data).resolve()),
        "split": split,
        "features": None if features is None else str(Path(features).resolve()),
        "search": search,
        "beam": beam,
        "ten_crop": ten_crop,
    }
    if stage_done(out, key) and (out / "metrics.json").exists():
        return json.loads((out / "metrics.json").read_text())
    metrics = evaluate(
        model_dir,
        data,
        out,
        split=split,
        features=features,
        beam=beam,
        search=search,
        ten_crop=ten_crop,
    )
    mark_stage(out, key)
    return metrics


def compare(
    models: list[str],
    hierarchy: Path,
    features: Path,
    data: Path,
    output: Path,
    val: Path | None = None,
    split: str | None = None,
    config: Path | None = None,
    overrides: dict[str, list[str]] | None = None,
    device: str = "cpu",
    on_event: Callable[[str], None] | None = None,
    geosurge: dict | None = None,
) -> dict[str, dict]:
    """Train (or reuse) and evaluate every model; ``overrides[name]`` are its ``--set``s;
    ``geosurge``: GeoSURGE's ``{"cells", "tokens", "semantic"}`` folders.
    Returns ``{name: metrics}`` (both protocols) and writes the comparison files."""
    overrides = overrides or {}
    output = Path(output)
    check_models(models, config, overrides, geosurge, hierarchy)
    check_not_input(output, [hierarchy, features, data, val, config, *(geosurge or {}).values()])
    results, errors = {}, {}
    say = on_event or (lambda m: None)
    for name in models:
        say(f"{name}: training (or reusing)")

        def progress(info: dict, name: str = name) -> None:
            if info["step"] % 25 == 0 or "val_loss" in info:
                extra = (
                    f", val country {100 * info['val_acc_country']:.1f}%"
                    if "val_acc_country" in info
                    else ""
                )
                if "val_geoscore" in info:
                    extra = f", val GeoScore {info['val_geoscore']:.0f}"
                say(f"{name}: step {info['step']}, loss {info['loss']:.3f}{extra}")

        model_dir = build_model(
            name,
            output / name,
            hierarchy,
            features,
            val,
            config if family_of(name).name == "hierloc" else None,
            overrides.get(name, []),
            device,
            on_step=progress,
            geosurge=geosurge,
        )
        say(f"{name}: evaluating on {default_split(data, split) or 'every row'}")
        results[name] = evaluate_model(
            model_dir, data, output / name / "eval", split, None if is_geosurge(name) else features
        )
        preds = pd.read_parquet(output / name / "eval" / "predictions.parquet")
        errors[name] = preds["error_km"].to_numpy(dtype=np.float64)
    for protocol, fname in (("entity", "compare.json"), ("osv5m", "compare_osv5m.json")):
        table = {n: m[protocol] for n, m in results.items()}
        write_file_atomic(output / fname, json.dumps(table, indent=2) + "\n")
    first = next(iter(results.values()))
    text = (
        f"# hierloc compare\n\nData: `{first['data']}` (split `{first['split']}`, "
        f"{first['n']:,} images). Same features, split and metrics for every model.\n\n"
        "## Entity protocol\n\n"
        + metrics_table(results, "entity")
        + f"\n## OSV5M protocol (truth labels: {first['osv5m_truth']})\n\n"
        + metrics_table(results, "osv5m")
        + "\nAccuracies and recall in %.\n\n![error CDF](error_cdf.png)\n"
    )
    write_file_atomic(output / "compare.md", text)
    error_cdf_plot(errors, output / "error_cdf.png")
    return results
