"""Reading point tables (``id, latitude, longitude`` + optional labels) with clear errors.

CSV (``.csv``, ``.csv.gz``, ``.tsv``) and Parquet (``.parquet``, ``.pq``) are read with Arrow.
Every problem raises :class:`~hierloc.errors.InputError` naming the file, the 1-based data row
(CSV: line = row + 1, the header being line 1) and the column, with how to fix it.

Label columns are kept as strings exactly as written: ``"nan"``, ``"NaN"`` and ``""`` stay
distinct strings (OSV5M's protocol treats them differently); Parquet nulls become ``None``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from hierloc.data.formats import table_format
from hierloc.errors import InputError

COORD_COLUMNS = ("latitude", "longitude")
COORD_RANGES = {"latitude": 90.0, "longitude": 180.0}


_format = table_format  # the name the readers use


def where(path: Path, row: int, fmt: str) -> str:
    """``"file: row N (line N+1)"`` for a 0-based data row index."""
    line = f" (line {row + 2})" if fmt == "csv" else ""
    return f"{path}: row {row + 1}{line}"


@dataclass
class PointTable:
    """A validated table. ``frame`` has ``id`` (str), ``latitude``/``longitude`` (float64)
    and the requested optional columns (object arrays of str or None)."""

    path: Path
    fmt: str
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def where(self, row: int) -> str:
        return where(self.path, row, self.fmt)


def _read_arrow(path: Path, fmt: str, wanted: list[str], optional: list[str]):
    if not path.exists():
        raise InputError(f"{path}: file does not exist; check the path")
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty; it needs a header and at least one row")
    try:
        if fmt == "csv":
            delimiter = "\t" if ".tsv" in path.name.lower() else ","
            header = pcsv.open_csv(
                path, parse_options=pcsv.ParseOptions(delimiter=delimiter)
            ).schema.names
            present = set(header)
            cols = [c for c in wanted + optional if c in present]
            table = pcsv.read_csv(
                path,
                parse_options=pcsv.ParseOptions(delimiter=delimiter),
                convert_options=pcsv.ConvertOptions(
                    include_columns=cols,
                    column_types={c: pa.string() for c in cols},
                    strings_can_be_null=False,
                ),
            )
        else:
            header = pq.read_schema(path).names
            cols = [c for c in wanted + optional if c in set(header)]
            table = pq.read_table(path, columns=cols)
    except InputError:
        raise
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError, UnicodeDecodeError) as e:
        msg = str(e).strip().splitlines()[0]
        raise InputError(f"{path}: cannot be read as {fmt.upper()}: {msg}") from e
    missing = [c for c in wanted if c not in header]
    if missing:
        hints = []
        for c in missing:
            close = difflib.get_close_matches(c, header, n=1)
            hints.append(f"{c!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise InputError(
            f"{path}: missing column {', '.join(hints)}; the file has {header[:12]}"
            + (" …" if len(header) > 12 else "")
        )
    return table


def _coordinates(table, path: Path, fmt: str, column: str) -> np.ndarray:
    col = table[column]
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        try:
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            text = pd.Series(col.to_pylist(), dtype=object)
            bad = pd.to_numeric(text, errors="coerce").isna() & ~text.str.strip().str.lower().isin(
                ["nan"]
            )
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raw = text.iloc[row]
            what = "is empty" if raw.strip() == "" else f"{raw!r} is not a number"
            raise InputError(
                f"{where(path, row, fmt)}, column {column!r}: {what}; "
                f"give {column} in decimal degrees"
            ) from None
    elif pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    else:
        raise InputError(
            f"{path}: column {column!r} has type {col.type}; it must hold numbers in degrees"
        )
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where(path, row, fmt)}, column {column!r}: value is {values[row]} (missing or not "
            f"finite; {int(bad.sum())} such rows); every row needs a {column} in degrees"
        )
    limit = COORD_RANGES[column]
    out = np.abs(values) > limit
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise InputError(
            f"{where(path, row, fmt)}, column {column!r}: {values[row]} is outside "
            f"[-{limit:g}, {limit:g}] ({int(out.sum())} such rows); are latitude and longitude "
            "swapped, or the values in radians?"
        )
    return values


def read_points(
    path: str | Path, optional: list[str] | tuple[str, ...] = (), id_column: str = "id"
) -> PointTable:
    """Read and validate ``id, latitude, longitude`` (+ ``optional`` columns if present).

    Raises:
        InputError: missing/empty/unreadable file, unknown format, missing column, empty id,
            non-numeric, missing, non-finite or out-of-range coordinates, duplicate ids.
    """
    path = Path(path)
    fmt = _format(path)
    table = _read_arrow(path, fmt, [id_column, *COORD_COLUMNS], list(optional))
    return validate_points(table, path, fmt, optional, id_column)


def points_from_frame(
    frame: pd.DataFrame, name: str, optional: list[str] | tuple[str, ...] = ()
) -> PointTable:
    """Validate an in-memory frame exactly like a file (``name`` stands for the path)."""
    missing = [c for c in ("id", *COORD_COLUMNS) if c not in frame.columns]
    if missing:
        raise InputError(f"{name}: missing column {missing[0]!r}; it has {list(frame.columns)}")
    cols = [c for c in ("id", *COORD_COLUMNS, *optional) if c in frame.columns]
    table = pa.Table.from_pandas(frame[cols], preserve_index=False)
    return validate_points(table, Path(name), "frame", optional)


def validate_points(
    table, path: Path, fmt: str, optional: list[str] | tuple[str, ...] = (), id_column: str = "id"
) -> PointTable:
    """Validate an Arrow table holding ``id, latitude, longitude`` (see :func:`read_points`)."""
    if table.num_rows == 0:
        raise InputError(f"{path}: has a header but no rows")
    ids_arrow = table[id_column]
    if ids_arrow.null_count:
        row = int(np.flatnonzero(pc.is_null(ids_arrow).to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where(path, row, fmt)}, column {id_column!r}: id is missing")
    ids_str = pc.cast(ids_arrow, pa.string())
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(ids_str)), 0)
    if pc.any(empty).as_py():
        row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise InputError(f"{where(path, row, fmt)}, column {id_column!r}: id is empty")
    ids = pd.Series(ids_str.to_numpy(zero_copy_only=False), dtype=object)
    if pc.count_distinct(ids_str).as_py() != table.num_rows:  # locate only when needed
        dup = ids.duplicated(keep=False).to_numpy()
        rows = np.flatnonzero(dup)
        first = ids.iloc[rows[0]]
        same = rows[(ids.iloc[rows] == first).to_numpy()][:2]
        raise InputError(
            f"{path}: id {first!r} appears more than once (rows {same[0] + 1} and "
            f"{same[1] + 1}; {int(dup.sum())} rows have a duplicated id); ids must be unique"
        )
    frame = pd.DataFrame({"id": ids})
    for c in COORD_COLUMNS:
        frame[c] = _coordinates(table, path, fmt, c)
    for c in optional:
        if c in table.column_names:
            col = table[c]
            if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
                col = pc.cast(col, pa.string())
            frame[c] = pd.Series(col.to_numpy(zero_copy_only=False), dtype=object)
    return PointTable(path=path, fmt=fmt, frame=frame)
