"""``hierloc bench …``: benchmarks measured side by side in one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli import FileFormat, VerboseOpt, bench_app, handles_errors, write_atomic


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
