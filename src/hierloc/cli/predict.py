"""``hierloc index`` and ``hierloc predict``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli import VerboseOpt, app, handles_errors, write_atomic

HierarchyOpt = Annotated[Path, typer.Option(help="Hierarchy folder (training split).")]
FeaturesOpt = Annotated[Path, typer.Option(help="Feature store with every split's images.")]
DataOpt = Annotated[Path, typer.Option(help="Data folder with {split}.parquet, or a file.")]
SplitOpt = Annotated[str, typer.Option(help="Split to evaluate.")]
CellsOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: cells folder (hierloc cells build).")
]
TokensOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: token store (hierloc extract --tokens).")
]
SemanticOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: semantic store (hierloc semantic).")
]


class PredictFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command("index")
@handles_errors
def index_cmd(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run folder (its best checkpoint, else the latest) or a checkpoint folder."
        ),
    ],  # fmt: skip
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    hierarchy: Annotated[
        Path | None,
        typer.Option(
            help="The hierarchy the run was trained on (default: the run's "
            "sources.json, written by hierloc train)."
        ),  # fmt: skip
    ] = None,
    half: Annotated[
        bool, typer.Option("--half", help="Store the entity points as float16.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model folder.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a model folder from a trained HierLoc (or GeoSURGE: cell embeddings, fusion module, cells) run: final entity embeddings per level, the parent → children lists (CSR), entity names and mean coordinates, the image side of the model and a manifest naming the encoder. hierloc predict needs nothing else."""  # noqa: E501
    from hierloc.index import build_index, load_index

    out = build_index(run, output, hierarchy=hierarchy, half=half, overwrite=overwrite)
    m = json.loads((out / "manifest.json").read_text())
    if m.get("format") == "hierloc-geosurge":
        enc = (m.get("encoder") or {}).get("name")
        typer.echo(json.dumps({"model": str(out), "geosurge_cells": m["cells"], "encoder": enc},
                              indent=2))  # fmt: skip
        return
    m = load_index(out).manifest
    typer.echo(json.dumps({"model": str(out), "counts": m["counts"], "dtype": m["dtype"],
                           "encoder": (m.get("encoder") or {}).get("name")}, indent=2))  # fmt: skip


def _rows(predictions) -> list[dict]:
    rows = []
    for p in predictions:
        for rank, a in enumerate(p.answers, 1):
            row = {"id": p.id, "rank": rank, "latitude": a.latitude, "longitude": a.longitude,
                   "score": a.score, "confidence": a.confidence}  # fmt: skip
            for place in a.places:
                row[place.level] = place.name
                row[f"{place.level}_id"] = place.entity_id
            rows.append(row)
    return rows


def _table(predictions) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    table = Table(title="hierloc predict", show_header=True)
    for col in ("id", "#", "country", "region", "subregion", "city", "lat, lon", "conf."):
        table.add_column(col, justify="right" if col in ("#", "conf.") else "left")
    for r in _rows(predictions):
        table.add_row(r["id"] if r["rank"] == 1 else "", str(r["rank"]), r.get("country", ""),
                      r.get("region", ""), r.get("subregion", ""), r.get("city", ""),
                      f"{r['latitude']:.3f}, {r['longitude']:.3f}",
                      f"{100 * r['confidence']:.1f}%")  # fmt: skip
    buf = StringIO()
    Console(file=buf, width=160).print(table)
    return buf.getvalue()


@app.command("predict")
@handles_errors
def predict_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder (hierloc index).")],
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Image files, folders, .zip/.tar, a metadata file with a path "
            "column, or a feature store folder."
        ),  # fmt: skip
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Answers per image.")] = 5,
    beam: Annotated[int, typer.Option(min=1, help="Beam width.")] = 10,
    fmt: Annotated[PredictFormat, typer.Option("--format", "-f")] = PredictFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,  # fmt: skip
    map_: Annotated[
        Path | None, typer.Option("--map", help="Also write a map of the answers (.html or .png).")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    ten_crop: Annotated[
        bool,
        typer.Option(
            "--ten-crop",
            help="GeoSURGE: average over the four corner and the centre "
            "crops and their mirror images (the paper's evaluation).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Where were these photos taken? Per image the top-k hierarchical answers (country / region / subregion / city names, coordinates, score, confidence) by beam search. Unreadable images are reported on stderr and in rejects.csv beside --output, never silently dropped."""  # noqa: E501
    import pandas as pd

    from hierloc.data.writers import check_output_file
    from hierloc.errors import InputError
    from hierloc.eval.evaluate import load_predictor
    from hierloc.geosurge_index import GeoSurgeLocator

    reads = [model, *inputs]
    check_output_file(output, reads)
    if output is not None:
        check_output_file(_rejects_path(output), reads, option="--output's rejects file")
    check_output_file(map_, [*reads, output], (".html", ".htm", ".png"), option="--map")
    geo = load_predictor(model, device=device)
    extra = {}
    if ten_crop:
        if not isinstance(geo, GeoSurgeLocator):
            raise InputError("--ten-crop applies to GeoSURGE models only")
        extra["ten_crop"] = True
    predictions, rejected = geo.predict(inputs, top_k=top_k, beam=beam, **extra)
    for r in rejected:
        typer.echo(f"hierloc: rejected {r.id}: {r.reason}", err=True)
    if rejected and not predictions:
        if output is not None:
            table = pd.DataFrame([r.__dict__ for r in rejected]).to_csv(index=False)
            write_atomic(_rejects_path(output), table)
        raise InputError(
            f"none of the {len(rejected)} images could be read (reasons above"
            f"{'' if output is None else ', and in ' + str(_rejects_path(output))})"
        )
    rows = _rows(predictions)
    if fmt == PredictFormat.json:
        text = json.dumps({"predictions": rows,
                           "rejected": [{"id": r.id, "reason": r.reason} for r in rejected]},
                          indent=2)  # fmt: skip
    elif fmt == PredictFormat.csv:
        text = pd.DataFrame(rows).to_csv(index=False)
    else:
        text = _table(predictions)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text)
        if rejected:
            table = pd.DataFrame([r.__dict__ for r in rejected]).to_csv(index=False)
            write_atomic(_rejects_path(output), table)
    if map_ is not None:
        from hierloc.eval.maps import prediction_map

        prediction_map(predictions, map_)


@app.command("evaluate")
@handles_errors
def evaluate_cmd(
    model: Annotated[Path, typer.Argument(help="Model folder (hierloc index, or a baseline's).")],
    data: Annotated[
        Path,
        typer.Option(
            help="Data folder with {split}.parquet (e.g. hierloc "
            "data bluemarble's), or a metadata file."
        ),
    ],  # fmt: skip
    split: Annotated[str, typer.Option(help="Which split of the data folder.")] = "test",
    features: Annotated[
        Path | None,
        typer.Option(
            help="Feature store holding the split's images (default: the one the "
            "model was trained on)."
        ),  # fmt: skip
    ] = None,
    semantic: Annotated[
        Path | None,
        typer.Option(
            help="GeoSURGE: semantic store of the split's images (default: the one it "
            "was trained on).",
            show_default=False,
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Report folder (default MODEL/eval-SPLIT)."),
    ] = None,
    beam: Annotated[int, typer.Option(min=1, help="Beam width.")] = 10,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    verbose: VerboseOpt = False,
) -> None:
    """Score a model on a labelled split: GeoScore, mean / median km, accuracy at country, region, subregion and city under the entity and OSV5M protocols, recall at 1 / 25 / 200 / 750 / 2,500 km. Writes metrics.json, predictions.parquet, report.md, error_cdf.png and error_map.png."""  # noqa: E501
    from hierloc.data.writers import check_not_input
    from hierloc.eval.evaluate import evaluate, report_markdown

    out = output or (model / f"eval-{split}")
    check_not_input(out, [model, data, features, semantic])
    metrics = evaluate(
        model, data, out, split=split, features=features, beam=beam, semantic=semantic
    )
    if fmt == "json":
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(report_markdown({model.name: metrics}))
        typer.echo(f"report: {out / 'report.md'}")


@app.command("compare")
@handles_errors
def compare_cmd(
    hierarchy: HierarchyOpt,
    features: FeaturesOpt,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Comparison folder.")],
    models: Annotated[
        str,
        typer.Option(
            help="Comma-separated: hierloc, geosurge, knn, classify, regress, "
            "zeroshot (geosurge needs --cells, --tokens, --semantic)."
        ),
    ] = "hierloc,knn,classify,regress,zeroshot",
    val: Annotated[Path | None, typer.Option(help="Validation metadata for HierLoc.")] = None,
    split: SplitOpt = "test",
    config: Annotated[Path | None, typer.Option(help="HierLoc YAML config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="HierLoc override (repeatable).")
    ] = None,
    cells: CellsOpt = None,
    tokens: TokensOpt = None,
    semantic: SemanticOpt = None,
    geosurge_set: Annotated[
        list[str] | None,
        typer.Option(
            "--geosurge-set", help="GeoSURGE override (repeatable), e.g. model.rgb_dim=256."
        ),
    ] = None,
    baseline_set: Annotated[
        list[str] | None,
        typer.Option("--baseline-set", help="Baseline override (repeatable), e.g. epochs=5."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    verbose: VerboseOpt = False,
) -> None:
    """Train (or reuse) and evaluate several models on the same features, split and metrics; writes compare.md, compare.json ({model: score keys}, entity protocol), compare_osv5m.json and error_cdf.png. Reruns reuse every stage whose inputs did not change."""  # noqa: E501
    from hierloc.compare import compare
    from hierloc.eval.evaluate import metrics_table

    names = [m.strip() for m in models.split(",") if m.strip()]
    over = {n: list(set_ or []) if n.startswith("hierloc") else list(baseline_set or [])
            for n in names}  # fmt: skip
    over |= {n: list(geosurge_set or []) for n in names if n.startswith("geosurge")}
    gs = {"cells": cells, "tokens": tokens, "semantic": semantic}
    results = compare(names, hierarchy, features, data, output, val=val, split=split,
                      config=config, overrides=over, device=device,
                      on_event=lambda m: typer.echo(f"compare: {m}", err=True),
                      geosurge=gs)  # fmt: skip
    if fmt == "json":
        typer.echo(json.dumps({n: m["entity"] for n, m in results.items()}, indent=2))
    else:
        typer.echo(metrics_table(results, "entity"))
        typer.echo(f"report: {output / 'compare.md'}")


@app.command("demo")
@handles_errors
def demo_cmd(
    output: Annotated[Path, typer.Option("--output", "-o", help="Demo folder.")] = Path(
        "runs/demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="A tiny version (a few hundred images; for tests).")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """The whole pipeline on the offline benchmark from nothing: Blue Marble patches at real photo locations → features (and tokens, semantic maps, S2 cells) → entity hierarchy → HierLoc, GeoSURGE and the baselines (knn retrieval, classification, regression, zero-shot) trained and evaluated side by side → runs/demo/report.md (table, error CDF, per-country error map, example predictions) and compare.json. About 20 minutes on 2 CPU cores; a rerun reuses every finished stage."""  # noqa: E501
    from hierloc.demo import run_demo
    from hierloc.eval.evaluate import metrics_table

    kwargs = {}
    if quick:
        kwargs = {"counts": {"train": 400, "val": 60, "test": 80},
                  "hierloc_set": ["optim.max_steps=6", "optim.batch_size=64", "run.val_every=3"],
                  "geosurge_set": ["model.rgb_dim=32", "model.embed_dim=64", "optim.max_steps=4",
                                   "optim.batch_size=64", "run.val_every=2"],
                  "cells_tau": ((200, 60, 30, 20, 15, 10, 8), 3),
                  "baseline_set": ["epochs=1"], "examples": 3}  # fmt: skip
    res = run_demo(output, say=lambda m: typer.echo(m, err=True), **kwargs)
    typer.echo(metrics_table(res["compare"], "entity"))
    for r in res["examples"]:
        err, conf, cc = r["error_km"], 100 * r["confidence"], 100 * r["country_confidence"]
        typer.echo(f"{r['id']}: truth {r['truth']} → predicted {r['predicted']} "
                   f"({err:,.0f} km; confidence country {cc:.0f}%, city {conf:.0f}%)")  # fmt: skip
    typer.echo(f"\nreport: {output / 'report.md'}")


@app.command("ablate")
@handles_errors
def ablate_cmd(
    hierarchy: HierarchyOpt,
    features: FeaturesOpt,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Ablation folder.")],
    val: Annotated[Path | None, typer.Option(help="Validation metadata.")] = None,
    split: SplitOpt = "test",
    config: Annotated[Path | None, typer.Option(help="Base HierLoc YAML config.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Base config override (repeatable).")
    ] = None,
    tables: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated paper tables: HierLoc's 6,7,8,10,11,12,13,14 and "
            "GeoSURGE's VI,VII,VIII (default: all those whose inputs are given)."
        ),
    ] = None,
    cells: CellsOpt = None,
    tokens: TokensOpt = None,
    semantic: SemanticOpt = None,
    geosurge_set: Annotated[
        list[str] | None,
        typer.Option("--geosurge-set", help="GeoSURGE base override (repeatable)."),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """The papers' ablation rows from one base config. GeoSURGE (with --cells, --tokens, --semantic): cell embeddings vs classification head (Table VI), depth 1/3/5/7 (VII), fusion blocks 0–3 (VIII). HierLoc: manifold (Table 6), zero shot / InfoNCE / no attention / unsquared distance / no text and location (7), flat vs beam 1 vs beam 10 (8), curvature (11), τ (12), λ (13), kernel (14). Each distinct config is trained once; interrupted runs resume. Writes ablation.md (paper layout, with whether the paper's best row is ours too) and ablation.json."""  # noqa: E501
    from hierloc.ablate import ablate, parse_tables

    gs = {"cells": cells, "tokens": tokens, "semantic": semantic}
    ablate(hierarchy, features, data, output, val=val, split=split, config=config,
           base=list(set_ or []), tables=parse_tables(tables),
           say=lambda m: typer.echo(m, err=True), geosurge=gs,
           geosurge_base=list(geosurge_set or []))  # fmt: skip
    typer.echo((output / "ablation.md").read_text())


def _rejects_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejects.csv")
