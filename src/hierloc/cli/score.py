"""``hierloc score``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import (
    OutputFormat,
    Protocol,
    VerboseOpt,
    app,
    handles_errors,
    write_atomic,
)


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
    from hierloc.data.writers import check_output_file
    from hierloc.eval.score import score_files

    check_output_file(output, [predictions, truth])
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
