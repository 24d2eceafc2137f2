"""The workflows: ``hierloc compare``, ``hierloc demo``, ``hierloc ablate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import VerboseOpt, app, handles_errors
from hierloc.cli.options import (
    CellsOpt,
    DataOpt,
    FeaturesOpt,
    HierarchyOpt,
    SemanticOpt,
    SplitOpt,
    TokensOpt,
)


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
    split: SplitOpt = None,
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
    from hierloc.eval.evaluate import metrics_table
    from hierloc.train.families import family_of
    from hierloc.workflows.compare import compare

    names = [m.strip() for m in models.split(",") if m.strip()]
    sets = {"hierloc": set_, "geosurge": geosurge_set}  # every other family: --baseline-set
    over = {n: list(sets.get(family_of(n).name, baseline_set) or []) for n in names}
    gs = {"cells": cells, "tokens": tokens, "semantic": semantic}
    results = compare(
        names,
        hierarchy,
        features,
        data,
        output,
        val=val,
        split=split,
        config=config,
        overrides=over,
        device=device,
        on_event=lambda m: typer.echo(f"compare: {m}", err=True),
        geosurge=gs,
    )
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
    from hierloc.eval.evaluate import metrics_table
    from hierloc.workflows.demo import run_demo

    kwargs = {}
    if quick:
        kwargs = {
            "counts": {"train": 400, "val": 60, "test": 80},
            "hierloc_set": [
                "optim.lr=1e-3",
                "optim.riemannian_lr=1e-3",
                "optim.max_steps=40",
                "optim.batch_size=64",
                "run.val_every=20",
                "model.feature_skip=true",
                "model.anchor_std=0.01",
                "model.loo_means=true",
                "run.keep_best=false",
            ],
            "geosurge_set": [
                "model.rgb_dim=32",
                "model.embed_dim=64",
                "optim.lr=1e-3",
                "optim.max_steps=30",
                "optim.batch_size=64",
                "run.val_every=15",
            ],
            "cells_tau": ((200, 60, 30, 20, 15, 10, 8), 3),
            "baseline_set": ["epochs=20"],
            "examples": 3,
        }
    res = run_demo(output, say=lambda m: typer.echo(m, err=True), **kwargs)
    typer.echo(metrics_table(res["compare"], "entity"))
    for r in res["examples"]:
        err, conf, cc = r["error_km"], 100 * r["confidence"], 100 * r["country_confidence"]
        typer.echo(
            f"{r['id']}: truth {r['truth']} → predicted {r['predicted']} "
            f"({err:,.0f} km; confidence country {cc:.0f}%, city {conf:.0f}%)"
        )
    typer.echo(f"\nreport: {output / 'report.md'}")


@app.command("ablate")
@handles_errors
def ablate_cmd(
    hierarchy: HierarchyOpt,
    features: FeaturesOpt,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Ablation folder.")],
    val: Annotated[Path | None, typer.Option(help="Validation metadata.")] = None,
    split: SplitOpt = None,
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
    seeds: Annotated[
        str,
        typer.Option(
            help="Comma-separated training seeds of the base configs (every variant with "
            "--all-seeds); rows give mean ± std and an ordering is called only beyond the "
            "seed spread. Seed 0 reuses runs/<variant>, seed s trains runs/<variant>-seed<s>."
        ),
    ] = "0",
    all_seeds: Annotated[
        bool, typer.Option("--all-seeds", help="Train every variant with every seed.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """The papers' ablation rows from one base config. GeoSURGE (with --cells, --tokens, --semantic): cell embeddings vs classification head (Table VI), depth 1/3/5/7 (VII), fusion blocks 0–3 (VIII). HierLoc: manifold (Table 6), zero shot / InfoNCE / no attention / unsquared distance / no text and location (7), flat vs beam 1 vs beam 10 (8), curvature (11), τ (12), λ (13), kernel (14). Each distinct config is trained once; interrupted runs resume. Writes ablation.md (paper layout, with whether the paper's best row is ours too) and ablation.json."""  # noqa: E501
    from hierloc.workflows.ablate import ablate, parse_seeds, parse_tables

    gs = {"cells": cells, "tokens": tokens, "semantic": semantic}
    seed_list = parse_seeds(seeds)
    table_list = parse_tables(tables)
    ablate(
        hierarchy,
        features,
        data,
        output,
        val=val,
        split=split,
        config=config,
        base=list(set_ or []),
        tables=table_list,
        say=lambda m: typer.echo(m, err=True),
        geosurge=gs,
        geosurge_base=list(geosurge_set or []),
        seeds=seed_list,
        all_seeds=all_seeds,
    )
    typer.echo((output / "ablation.md").read_text())
