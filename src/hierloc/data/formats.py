"""Table file formats by name (no pandas or pyarrow: light modules use it)."""

from __future__ import annotations

from pathlib import Path

from hierloc.errors import InputError

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
