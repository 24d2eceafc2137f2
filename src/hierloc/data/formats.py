"""File and folder formats by name (no pandas, pyarrow or torch: light modules use it):
table files by their suffix, hierloc folders by their manifest's ``format``."""

from __future__ import annotations

import json
from pathlib import Path

from hierloc.errors import InputError

FEATURES_FORMAT = "hierloc-features"  # a feature store's manifest (hierloc.data.features)
# the formats of model folders (``hierloc train``, ``hierloc index``): one may replace another
# with --overwrite. The built-in families' here; hierloc.locate.register_family adds others.
MODEL_FOLDER_KINDS = ["hierloc-index", "hierloc-geosurge", "hierloc-baseline"]
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: Path) -> str:
    """``"csv"`` or ``"parquet"`` from a file's name; one line naming both otherwise."""
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"{path}: unknown file format {path.suffix!r}; use CSV ({', '.join(CSV_SUFFIXES)}) "
        f"or Parquet ({', '.join(PARQUET_SUFFIXES)})"
    )


def folder_kind(path: Path) -> str | None:
    """The ``format`` a folder's ``manifest.json`` declares (None without a readable one)."""
    try:
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest.get("format") if isinstance(manifest, dict) else None
