"""The ``hierloc`` command line: each command is a thin wrapper over one library call.

Errors a user can cause print one line (``hierloc: error: …``) and exit with status 2; add
``--verbose`` to see the traceback.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc import __version__
from hierloc.errors import HierlocError, InputError

app = typer.Typer(
    name="hierloc",
    help="Worldwide visual geolocation: where on Earth was this photo taken?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    add_completion=False,
)
bench_app = typer.Typer(
    help="Benchmarks: speed figures measured side by side in one run.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")

_state = {"verbose": False}

VerboseOpt = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show debug logs and full tracebacks.")
]


class Protocol(str, Enum):
    auto = "auto"
    osv5m = "osv5m"
    entity = "entity"
    distance = "distance"


class FileFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _fail(message: str, code: int) -> None:
    typer.echo(f"hierloc: error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def handles_errors(fn):
    """Turn user errors into one line on stderr and a non-zero exit (traceback with -v)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        verbose = _state["verbose"] or kwargs.get("verbose", False)
        _configure_logging(verbose)
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except HierlocError as e:
            if verbose:
                raise
            _fail(str(e), e.exit_code)
        except OSError as e:  # permissions, disk full, …: name the file
            if verbose:
                raise
            _fail(f"{e.filename or ''}: {e.strerror or e}", 2)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except Exception as e:  # a bug of ours: still one line unless --verbose
            if verbose:
                raise
            _fail(
                f"internal error {type(e).__name__}: {e} (rerun with --verbose for the "
                "traceback, and please report it)",
                1,
            )

    return wrapper


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file + rename: never a half-written output."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give --output a file name, e.g. {path}/out.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise InputError(f"{path}: cannot write here ({e.strerror or e})") from e
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hierloc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: VerboseOpt = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """[bold]hierloc[/bold]: worldwide visual geolocation (HierLoc and GeoSURGE).

    Geolocate photos to country / region / subregion / city and coordinates, train on your own geotagged data, and evaluate with the field's protocols.
    """  # noqa: E501
    _state["verbose"] = verbose


def _render_score_table(result) -> str:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    m = result.to_dict()
    table = Table(title=f"hierloc score — protocol {m['protocol']}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("samples", f"{m['n']:,}")
    table.add_row("GeoScore", f"{m['geoscore']:.1f}")
    table.add_row("mean error (km)", f"{m['mean_km']:.1f}")
    table.add_row("median error (km)", f"{m['median_km']:.1f}")
    for r in (1, 25, 200, 750, 2500):
        table.add_row(f"within {r} km", f"{100 * m[f'acc_{r}km']:.2f} %")
    for level in ("country", "region", "subregion", "city"):
        value = m[f"acc_{level}"]
        count = m["level_counts"].get(level)
        text = "—" if value is None else f"{100 * value:.2f} %  (of {count:,})"
        table.add_row(f"{level} accuracy", text)
    notes = []
    if m["protocol"] == "osv5m":
        notes.append(
            "missing labels: "
            + ("clean (all excluded)" if m["clean"] else "OSV5M's rule (only 'nan' excluded)")
        )
    left = m["left_out"]
    if left.get("predictions") or left.get("truth"):
        notes.append(
            f"left out: {left['predictions']:,} predictions without truth, "
            f"{left['truth']:,} truth rows without prediction"
        )
    buf = StringIO()
    Console(file=buf, width=100, force_terminal=False).print(table)
    return buf.getvalue() + "".join(f"{n}\n" for n in notes)


@app.command()
@handles_errors
def score(
    predictions: Annotated[
        Path,
        typer.Argument(
            help="Predictions, CSV or Parquet: [cyan]id, latitude, longitude[/cyan] in degrees, "
            "plus [cyan]country_id, region_id, subregion_id, city_id[/cyan] for the entity "
            "protocol.",
            show_default=False,
        ),
    ],
    truth: Annotated[
        Path,
        typer.Option(
            "--truth",
            "-t",
            help="Ground truth, CSV or Parquet: [cyan]id, latitude, longitude[/cyan] plus "
            "OSV5M's [cyan]unique_country, unique_region, unique_sub-region, unique_city[/cyan]"
            " (the OSV5M test CSV works as is) and/or entity id columns. Joined on id.",
            show_default=False,
        ),
    ],
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="How level accuracy is computed. [bold]osv5m[/bold]: reverse-geocode the "
            "predicted coordinates on GeoNames cities1000 and compare with the unique_* labels, "
            "exactly as OSV5M's official code. [bold]entity[/bold]: compare predicted entity "
            "ids with the truth's. [bold]distance[/bold]: distance metrics only. "
            "[bold]auto[/bold]: osv5m if the truth has unique_* columns, else entity if both "
            "files have entity ids, else distance.",
        ),
    ] = Protocol.auto,
    clean: Annotated[
        bool,
        typer.Option(
            "--clean",
            help="Exclude every missing label and treat '', 'nan' and 'NaN' alike. Without it, "
            "OSV5M's rule: only labels equal to the string 'nan' leave the denominator, so "
            "numbers compare with published ones.",
        ),
    ] = False,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Score the ids present in both files and report how many were left out, "
            "instead of failing when an id is on one side only.",
        ),
    ] = False,
    fmt: Annotated[
        OutputFormat,
        typer.Option("--format", "-f", help="table: human-readable; json: the stable keys."),
    ] = OutputFormat.table,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Also write the result (in --format) to this file, atomically.",
            show_default=False,
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Score predicted coordinates against the truth.

    Reports GeoScore, mean and median error (km), accuracy within 1 / 25 / 200 / 750 / 2500 km (strict <, as OSV5M) and at country / region / subregion / city level.

    JSON keys: n, geoscore, mean_km, median_km, acc_1km, acc_25km, acc_200km, acc_750km, acc_2500km, acc_country, acc_region, acc_subregion, acc_city (fractions in [0, 1]; null when a level is not scored), protocol; plus clean, level_counts and left_out.

    Bad input (missing file or column, unknown format, non-numeric, missing or out-of-range coordinates, duplicate ids, ids on one side only, empty file) stops with a one-line error naming the file, row and column.
    """  # noqa: E501
    from hierloc.eval.score import score_files

    result = score_files(
        predictions,
        truth,
        protocol=protocol.value,
        clean=clean,
        allow_missing=allow_missing,
    )
    text = result.to_json() + "\n" if fmt == OutputFormat.json else _render_score_table(result)
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

    report = bench.run(
        rows=rows, file_format=file_format.value, workdir=workdir, compare_rows=compare_rows
    )
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    if output is not None:
        write_atomic(output, text)
    typer.echo(text, nl=False)
    verdict = "within" if report.seconds_score <= report.target_seconds else "OVER"
    typer.echo(
        f"scored {report.rows:,} rows in {report.seconds_score:.1f} s "
        f"({report.rows_per_second:,.0f} rows/s): {verdict} the {report.target_seconds:.0f} s "
        "target",
        err=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="hierloc")


__all__ = ["app", "main"]
