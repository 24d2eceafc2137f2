"""``hierloc index`` and ``hierloc predict``."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import VerboseOpt, app, handles_errors, write_atomic


class PredictFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class Engine(str, Enum):
    torch = "torch"
    onnx = "onnx"


@app.command("export")
@handles_errors
def export_cmd(
    model: Annotated[Path, typer.Argument(help="A HierLoc model folder (hierloc index).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The .onnx file to write.")],
    beam: Annotated[
        int, typer.Option(min=1, help="Beam width, fixed in the file (the most answers too).")
    ] = 10,
    half: Annotated[
        bool, typer.Option("--half", help="Store the entity points as float16.")
    ] = False,
    features_input: Annotated[
        bool,
        typer.Option(
            "--features-input",
            help="Take image features (B, D) instead of photos: leave the encoder out.",
        ),
    ] = False,
    web: Annotated[
        bool,
        typer.Option(
            "--web",
            help="Write a static site (-o a folder) that geolocates in the browser with "
            "onnxruntime-web: the photo never leaves the machine. Serve it with any static "
            "server (python -m http.server -d SITE).",
        ),
    ] = False,
    onnxruntime_web: Annotated[
        Path | None,
        typer.Option(
            help="--web: the dist folder of an installed onnxruntime-web (npm install "
            "onnxruntime-web; default $HIERLOC_ONNXRUNTIME_WEB, else "
            "./node_modules/onnxruntime-web/dist).",
            show_default=False,
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="--web: replace an exported site.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """The whole geolocator in one ONNX file: the image encoder (input: photos resized, centre-cropped and normalised, (B, 3, S, S) float32; the settings ride in the file), the query head and the beam search unrolled over the levels (standard opset 17: runs in onnxruntime anywhere and in onnxruntime-web). Outputs per image the beam's paths (entity rows per level), path scores, coordinates and per-level confidences; the entity ids and names are in the file's metadata. hierloc predict --engine onnx FILE PHOTOS answers with it without torch."""  # noqa: E501
    from hierloc.errors import InputError

    if web:
        from hierloc.serve.site import export_site

        if features_input:
            raise InputError("--web exports photos in, not features: drop --features-input")
        meta = export_site(model, output, beam, half, onnxruntime_web, overwrite)
        size = sum(p.stat().st_size for p in output.rglob("*") if p.is_file())
        summary = {
            "site": str(output),
            "bytes": size,
            "serve": f"python -m http.server -d {output}",
        }
        typer.echo(
            json.dumps(
                summary | {"entities": {t["level"]: len(t["ids"]) for t in meta["levels"]}},
                indent=2,
            )
        )
        return
    if onnxruntime_web is not None or overwrite:
        raise InputError("--onnxruntime-web and --overwrite apply to --web only")
    from hierloc.locate.export import export_onnx

    meta = export_onnx(model, output, width=beam, half=half, with_encoder=not features_input)
    counts = {t["level"]: len(t["ids"]) for t in meta["levels"]}
    summary = {"file": str(output), "bytes": output.stat().st_size, "input": meta["input"]}
    typer.echo(json.dumps(summary | {"beam": beam, "float16": half, "entities": counts}, indent=2))


@app.command("index")
@handles_errors
def index_cmd(
    run: Annotated[
        Path,
        typer.Argument(
            help="A run folder (its best checkpoint, else the latest) or a checkpoint folder."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    hierarchy: Annotated[
        Path | None,
        typer.Option(
            help="The hierarchy the run was trained on (default: the run's "
            "sources.json, written by hierloc train)."
        ),
    ] = None,
    half: Annotated[
        bool, typer.Option("--half", help="Store the entity points as float16.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing model folder.")] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write a model folder from a trained HierLoc (or GeoSURGE: cell embeddings, fusion module, cells) run: final entity embeddings per level, the parent → children lists (CSR), entity names and mean coordinates, the image side of the model and a manifest naming the encoder. hierloc predict needs nothing else."""  # noqa: E501
    from hierloc.locate import build_model_folder, load_locator

    out = build_model_folder(run, output, hierarchy=hierarchy, half=half, overwrite=overwrite)
    typer.echo(json.dumps({"model": str(out)} | load_locator(out).describe(), indent=2))


def _table(predictions) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    from hierloc.locate.types import answer_rows

    table = Table(title="hierloc predict", show_header=True)
    for col in ("id", "#", "country", "region", "subregion", "city", "lat, lon", "conf."):
        table.add_column(col, justify="right" if col in ("#", "conf.") else "left")
    for r in answer_rows(predictions):
        table.add_row(
            r["id"] if r["rank"] == 1 else "",
            str(r["rank"]),
            r.get("country", ""),
            r.get("region", ""),
            r.get("subregion", ""),
            r.get("city", ""),
            f"{r['latitude']:.3f}, {r['longitude']:.3f}",
            f"{100 * r['confidence']:.1f}%",
        )
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
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Answers per image.")] = 5,
    beam: Annotated[int, typer.Option(min=1, help="Beam width.")] = 10,
    fmt: Annotated[PredictFormat, typer.Option("--format", "-f")] = PredictFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
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
    engine: Annotated[
        Engine,
        typer.Option(
            help="torch: a model folder; onnx: a file from hierloc export (no torch needed; "
            "--beam is the file's)."
        ),
    ] = Engine.torch,
    verbose: VerboseOpt = False,
) -> None:
    """Where were these photos taken? Per image the top-k hierarchical answers (country / region / subregion / city names, coordinates, score, confidence) by beam search. Unreadable images are reported on stderr and in rejects.csv beside --output, never silently dropped."""  # noqa: E501
    from hierloc.data.writers import check_output_file
    from hierloc.errors import InputError
    from hierloc.locate import answer_rows

    reads = [model, *inputs]
    check_output_file(output, reads)
    if output is not None:
        check_output_file(_rejects_path(output), reads, option="--output's rejects file")
    check_output_file(map_, [*reads, output], (".html", ".htm", ".png"), option="--map")
    store = _is_store(inputs)
    if engine == Engine.onnx:
        if ten_crop or device != "cpu":
            raise InputError("--ten-crop and --device apply to --engine torch only")
        from hierloc.locate.onnx_engine import OnnxGeolocator

        geo = OnnxGeolocator(model)
        beam = geo.width
        predictions, rejected = geo.predict_images(inputs, top_k=top_k)
    else:
        from hierloc.locate import load_locator

        geo = load_locator(model, device=device)
        if store:
            if ten_crop:
                raise InputError("--ten-crop crops photos; a feature store holds features")
            predictions = geo.predict_store(inputs[0], top_k=top_k, beam=beam)
            rejected = []
        else:
            predictions, rejected = geo.predict_images(
                inputs, top_k=top_k, beam=beam, ten_crop=ten_crop
            )
    for r in rejected:
        typer.echo(f"hierloc: rejected {r.id}: {r.reason}", err=True)
    rejects_csv = _csv([{"id": r.id, "reason": r.reason} for r in rejected], ["id", "reason"])
    if rejected and not predictions:
        if output is not None:
            write_atomic(_rejects_path(output), rejects_csv)
        raise InputError(
            f"none of the {len(rejected)} images could be read (reasons above"
            f"{'' if output is None else ', and in ' + str(_rejects_path(output))})"
        )
    if fmt == PredictFormat.json:
        text = json.dumps(
            _document(model, inputs, store, top_k, beam, predictions, rejected), indent=2
        )
    elif fmt == PredictFormat.csv:
        text = _csv(answer_rows(predictions))
    else:
        text = _table(predictions)
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text)
        if rejected:
            write_atomic(_rejects_path(output), rejects_csv)
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
    ],
    split: Annotated[
        str | None,
        typer.Option(
            help="A data folder's split file (default test), or the rows of a metadata file "
            "whose split column has this value (a file with a split column needs it; a file "
            "without one is scored whole).",
            show_default=False,
        ),
    ] = None,
    features: Annotated[
        Path | None,
        typer.Option(
            help="Feature store holding the split's images (default: the one the "
            "model was trained on)."
        ),
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
    ten_crop: Annotated[
        bool,
        typer.Option(
            "--ten-crop",
            help="GeoSURGE: read each image from the split's path column and average its "
            "prediction over the standard ten crops (the paper's evaluation).",
        ),
    ] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json.")] = "table",
    verbose: VerboseOpt = False,
) -> None:
    """Score a model on a labelled split: GeoScore, mean / median km, accuracy at country, region, subregion and city under the entity and OSV5M protocols, recall at 1 / 25 / 200 / 750 / 2,500 km. Writes metrics.json, predictions.parquet, report.md, error_cdf.png and error_map.png."""  # noqa: E501
    from hierloc.data.writers import check_not_input
    from hierloc.eval.evaluate import default_split, evaluate, report_markdown

    out = output or (model / f"eval-{default_split(data, split) or 'all'}")
    check_not_input(out, [model, data, features, semantic])
    metrics = evaluate(
        model,
        data,
        out,
        split=split,
        features=features,
        beam=beam,
        semantic=semantic,
        ten_crop=ten_crop,
    )
    if fmt == "json":
        typer.echo(json.dumps(metrics, indent=2))
    else:
        typer.echo(report_markdown({model.name: metrics}))
        typer.echo(f"report: {out / 'report.md'}")


def _is_store(inputs: list[Path]) -> bool:
    """One input that is a feature store (its manifest says so, or it holds a store's
    ``features.npy``: then a damaged manifest is reported as the store's): its rows are
    answered."""
    from hierloc.data.formats import FEATURES_FORMAT, folder_kind

    if len(inputs) != 1 or not inputs[0].is_dir():
        return False
    return folder_kind(inputs[0]) == FEATURES_FORMAT or (inputs[0] / "features.npy").exists()


def _document(
    model: Path, inputs: list[Path], store: bool, top_k: int, beam: int, predictions, rejected
):
    """The predictions document (:mod:`hierloc.locate.document`, the same as the HTTP API's):
    each input's file as given, its position and its EXIF GPS position."""
    from hierloc.data.images import Opener, collect_items
    from hierloc.locate.document import document, photo_gps, rejected_json, result_json

    sources: dict[str, dict] = {}
    gps: dict[str, tuple[float, float] | None] = {}
    if store:  # a feature store's rows
        from hierloc.data.features import FeatureStore

        ids = FeatureStore.open(inputs[0]).ids.to_pylist()
        sources = {i: {"file": str(inputs[0]), "index": k} for k, i in enumerate(ids)}
    else:
        opener = Opener()
        try:
            for k, item in enumerate(collect_items(list(inputs))):
                sources[item.id] = {"file": item.member or item.container, "index": k}
                try:
                    gps[item.id] = photo_gps(opener.read(item))
                except OSError:  # unreadable: listed among the rejects already
                    gps[item.id] = None
        finally:
            opener.close()
    results = [result_json(p, sources[p.id], gps.get(p.id)) for p in predictions]
    return document(
        model.resolve().name,
        top_k,
        beam,
        results,
        [rejected_json(r, sources[r.id]) for r in rejected],
    )


def _csv(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text, the columns in first-seen order (the standard library's writer)."""
    import csv
    import io

    cols = list(columns or [])
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _rejects_path(output: Path) -> Path:
    return output.with_name(output.stem + ".rejects.csv")
