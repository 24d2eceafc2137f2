"""Chunked reading and validation of geotagged metadata (OSV5M, MP16/YFCC, any CSV/Parquet).

A metadata file has one row per image: an id, a latitude and a longitude in degrees, and
optionally the labels ``country, region, sub-region, city`` (OSV5M's CSVs as they are; files
with other column names through a mapping such as ``lat=LAT,lon=LON,id=IMG_ID``).

Files are read in Arrow record batches of ``chunk_rows`` rows, so 5 million rows never become
5 million Python objects. Each row is validated: id present, non-empty and unique (across
the whole file), coordinates numeric, finite, ``|lat| <= 90`` and ``lon`` in ``[-180, 180]``.
A bad row is either rejected — written to the rejects file with its row number and reason,
and counted — or, with ``strict=True``, stops the run with an error naming the row.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from hierloc.data.tables import COORD_RANGES, _format, where
from hierloc.errors import InputError

LABEL_COLUMNS = ("country", "region", "sub-region", "city")
CANONICAL = ("id", "latitude", "longitude", *LABEL_COLUMNS)
ALIASES = {
    "lat": "latitude",
    "lon": "longitude",
    "lng": "longitude",
    "long": "longitude",
    "subregion": "sub-region",
    "sub_region": "sub-region",
}
DEFAULT_CHUNK_ROWS = 500_000


def parse_column_map(spec: str | None) -> dict[str, str]:
    """``"lat=LAT,lon=LON,id=IMG_ID"`` → ``{"latitude": "LAT", "longitude": "LON", "id": …}``.

    Keys are our canonical names (or their aliases ``lat, lon, lng, subregion``); values the
    file's column names.
    """
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(
                f"--columns: {part.strip()!r} is not NAME=COLUMN; write e.g. "
                "'lat=LAT,lon=LON,id=IMG_ID'"
            )
        key, value = (s.strip() for s in part.split("=", 1))
        canon = ALIASES.get(key.lower(), key.lower())
        if canon not in CANONICAL:
            close = difflib.get_close_matches(canon, CANONICAL, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"--columns: unknown name {key!r}{hint}; use one of {', '.join(CANONICAL)}"
            )
        if not value:
            raise InputError(f"--columns: {key}= needs a column name")
        out[canon] = value
    return out


@dataclass
class Rejects:
    """Counts rejected rows by reason and writes them to a CSV (``row, id, reason``)."""

    path: Path | None = None
    counts: Counter = field(default_factory=Counter)
    keep: list | None = None  # also collect ``(row, id, reason)`` here (1-based rows)
    _file: object = None
    _writer: object = None

    def add(
        self, rows: np.ndarray, ids: np.ndarray, reasons: np.ndarray, kinds: np.ndarray
    ) -> None:
        """Record rejected 0-based data rows with their ids, reasons (written) and kinds
        (counted in the summary, e.g. ``latitude is not a number``)."""
        if len(rows) == 0:
            return
        self.counts.update(Counter(kinds.tolist()))
        if self.keep is not None:
            triples = zip(rows.tolist(), ids.tolist(), reasons.tolist(), strict=True)
            self.keep += [(r + 1, i, why) for r, i, why in triples]
        if self.path is None:
            return
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="")  # noqa: SIM115 (closed in close())
            self._writer = csv.writer(self._file)
            self._writer.writerow(["row", "id", "reason"])
        for r, i, why in zip(rows.tolist(), ids.tolist(), reasons.tolist(), strict=True):
            self._writer.writerow([r + 1, "" if i is None else i, why])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._writer = None


@dataclass
class Chunk:
    """The valid rows of one batch.

    Attributes:
        table: the file's columns as read (names unchanged), valid rows only.
        rows: their 0-based data row numbers in the file, ``(n,)`` int64.
        ids: ids as strings, ``(n,)`` object array.
        lat, lon: parsed coordinates in degrees, ``(n,)`` float64.
        source: canonical name → the file's column name.
    """

    table: object  # pyarrow.Table
    rows: np.ndarray
    ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    source: dict[str, str]

    def __len__(self) -> int:
        return len(self.rows)

    def labels(self, canon: str) -> np.ndarray | None:
        """A label column (``country``, ``region``, ``sub-region``, ``city``) as an object
        array of str/None, or ``None`` if the file has no such column."""
        col = self.source.get(canon)
        if col is None:
            return None
        return self.table[col].to_numpy(zero_copy_only=False).astype(object)


class _SeenIds:
    """Ids seen so far: one sorted run of 64-bit hashes (+ first rows) per chunk, confirmed on
    the real strings. About 30 bytes per accepted row, with no re-sorting of earlier chunks."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, object]] = []  # (hashes, rows, ids)

    def duplicates(self, ids: pd.Series, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(is_duplicate, first_row)`` for each id against earlier chunks and itself."""
        h = pd.util.hash_array(ids.to_numpy(dtype=object), categorize=False)
        dup = np.array(ids.duplicated(keep="first"), dtype=bool)
        first = np.full(len(ids), -1, dtype=np.int64)
        if dup.any():  # within this chunk: the first occurrence
            firsts = pd.Series(rows, index=ids.to_numpy(dtype=object))
            firsts = firsts[~firsts.index.duplicated(keep="first")]
            first[dup] = firsts.loc[ids[dup].to_numpy(dtype=object)].to_numpy()
        for run_hashes, run_rows, run_ids in self.runs:
            pos = np.minimum(np.searchsorted(run_hashes, h), len(run_hashes) - 1)
            hit = (run_hashes[pos] == h) & ~dup
            if hit.any():  # confirm on the strings (a 64-bit collision is not a duplicate)
                cand = pa.array(ids[hit].to_numpy(dtype=object), type=pa.string())
                real = pc.is_in(cand, value_set=run_ids).to_numpy(zero_copy_only=False)
                idx = np.flatnonzero(hit)[real]
                dup[idx] = True
                first[idx] = run_rows[pos[idx]]
        keep = ~dup
        order = np.argsort(h[keep], kind="stable")
        kept_ids = pa.array(ids[keep].to_numpy(dtype=object), type=pa.string())
        self.runs.append((h[keep][order], rows[keep][order], kept_ids))
        return dup, first


# a file of at least this many coordinates, all inside ±π/2, ±π (a patch of open sea in the
# Gulf of Guinea), is refused as radians
RADIAN_ROWS = 3


class MetadataReader:
    """Iterate a metadata file in validated chunks.

    Args:
        path: CSV (``.csv``, ``.csv.gz``, ``.tsv``) or Parquet.
        columns: mapping canonical name → file column (see :func:`parse_column_map`); names
            not mapped are looked up under their canonical name.
        keep_all: also carry every other column of the file (as read) in each chunk.
        strict: stop at the first bad row instead of rejecting it.
        rejects: where rejected rows go (counted even without a file).
        chunk_rows: rows per Arrow batch.
    """

    def __init__(
        self,
        path: str | Path,
        columns: dict[str, str] | None = None,
        keep_all: bool = False,
        strict: bool = False,
        rejects: Rejects | None = None,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> None:
        self.path = Path(path)
        self.fmt = _format(self.path)
        self.mapping = dict(columns or {})
        self.keep_all = keep_all
        self.strict = strict
        self.rejects = rejects if rejects is not None else Rejects()
        self.chunk_rows = chunk_rows
        self.rows_read = 0
        self.rows_valid = 0
        self._check_file()
        self.header = self._header()
        self.source = self._resolve_columns()

    # -- file and columns ---------------------------------------------------------------
    def _check_file(self) -> None:
        if not self.path.exists():
            raise InputError(f"{self.path}: file does not exist; check the path")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a folder; give a CSV or Parquet file")
        if self.path.stat().st_size == 0:
            raise InputError(f"{self.path}: file is empty; it needs a header and rows")

    def _delimiter(self) -> str:
        return "\t" if ".tsv" in self.path.name.lower() else ","

    def _header(self) -> list[str]:
        try:
            if self.fmt == "csv":
                reader = pcsv.open_csv(
                    self.path, parse_options=pcsv.ParseOptions(delimiter=self._delimiter())
                )
                return reader.schema.names
            return pq.read_schema(self.path).names
        except (pa.ArrowInvalid, OSError) as e:
            msg = str(e).strip().splitlines()[0]
            raise InputError(f"{self.path}: cannot be read as {self.fmt.upper()}: {msg}") from e

    def _resolve_columns(self) -> dict[str, str]:
        """Canonical name → file column for the columns this file has."""
        header = set(self.header)
        out = {}
        for canon in CANONICAL:
            col = self.mapping.get(canon, canon)
            if col in header:
                out[canon] = col
            elif canon in self.mapping:
                close = difflib.get_close_matches(col, self.header, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InputError(
                    f"{self.path}: --columns maps {canon} to {col!r}, which is not a column"
                    f"{hint}; the file has {self.header[:15]}"
                )
        for canon in ("id", "latitude", "longitude"):
            if canon not in out:
                close = difflib.get_close_matches(canon, self.header, n=1, cutoff=0.4)
                hint = f" --columns {canon}={close[0]}" if close else f" --columns {canon}=NAME"
                raise InputError(
                    f"{self.path}: missing column {canon!r}; the file has "
                    f"{self.header[:15]}; map it with{hint}"
                )
        return out

    @property
    def label_columns(self) -> list[str]:
        """The canonical label columns this file has."""
        return [c for c in LABEL_COLUMNS if c in self.source]

    # -- reading ------------------------------------------------------------------------
    def _batches(self):
        wanted = list(self.header) if self.keep_all else list(self.source.values())
        try:
            if self.fmt == "csv":
                as_text = set(wanted)  # text: values pass through unchanged, no type drift
                reader = pcsv.open_csv(
                    self.path,
                    read_options=pcsv.ReadOptions(
                        block_size=int(max(1 << 12, min(1 << 24, self.chunk_rows * 64)))
                    ),
                    parse_options=pcsv.ParseOptions(delimiter=self._delimiter()),
                    convert_options=pcsv.ConvertOptions(
                        include_columns=wanted,
                        column_types={c: pa.string() for c in wanted if c in as_text},
                        strings_can_be_null=False,
                    ),
                )
                pending = []
                n_pending = 0
                for batch in reader:
                    pending.append(batch)
                    n_pending += batch.num_rows
                    if n_pending >= self.chunk_rows:
                        yield pa.Table.from_batches(pending)
                        pending, n_pending = [], 0
                if pending:
                    yield pa.Table.from_batches(pending)
            else:
                pf = pq.ParquetFile(self.path)
                for batch in pf.iter_batches(batch_size=self.chunk_rows, columns=wanted):
                    yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
            msg = str(e).strip().splitlines()[0]
            raise InputError(
                f"{self.path}: cannot be read as {self.fmt.upper()} near row "
                f"{self.rows_read + 1}: {msg}"
            ) from e

    def _coordinate(self, table, canon: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, reasons, kinds)``; reason/kind ``None`` for valid rows."""
        col = table[self.source[canon]]
        name = self.source[canon]
        n = len(col)
        reasons = np.full(n, None, dtype=object)
        kinds = np.full(n, None, dtype=object)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            text = col.to_numpy(zero_copy_only=False)
            values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(
                dtype=np.float64
            )
            lowered = pd.Series(text, dtype=object).str.strip().str.lower()
            empty = (lowered == "").to_numpy()
            not_number = np.isnan(values) & ~lowered.isin(["nan"]).to_numpy() & ~empty
            reasons[not_number] = [f"{name} {t!r} is not a number" for t in text[not_number]]
            kinds[not_number] = f"{name} is not a number"
            reasons[empty] = kinds[empty] = f"{name} is empty"
        elif pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            values = np.asarray(values, dtype=np.float64)
        else:
            raise InputError(
                f"{self.path}: column {name!r} has type {col.type}; it must hold degrees"
            )
        bad = (kinds == None) & ~np.isfinite(values)  # noqa: E711 (elementwise)
        reasons[bad] = kinds[bad] = f"{name} is missing or not finite"
        limit = COORD_RANGES[canon]
        out = (kinds == None) & (np.abs(values) > limit)  # noqa: E711
        reasons[out] = [f"{name} {v:g} is outside [-{limit:g}, {limit:g}]" for v in values[out]]
        kinds[out] = f"{name} out of range"
        return values, reasons, kinds

    def __iter__(self) -> Iterator[Chunk]:
        seen = _SeenIds()
        any_rows = False
        degrees = False  # a valid row outside the radian box (|lat| ≤ π/2, |lon| ≤ π)
        for table in self._batches():
            n = table.num_rows
            if n == 0:
                continue
            any_rows = True
            rows = np.arange(self.rows_read, self.rows_read + n, dtype=np.int64)
            self.rows_read += n
            id_col = table[self.source["id"]]
            ids = pd.Series(pc.cast(id_col, pa.string()).to_numpy(zero_copy_only=False))
            ids = ids.astype(object)
            reasons = np.full(n, None, dtype=object)
            kinds = np.full(n, None, dtype=object)

            def mark(mask, why, kind, reasons=reasons, kinds=kinds):
                m = mask & (kinds == None)  # noqa: E711 (the first failing check wins)
                reasons[m] = why[m] if isinstance(why, np.ndarray) else why
                kinds[m] = kind[m] if isinstance(kind, np.ndarray) else kind

            missing = (ids.isna() | (ids.fillna("").str.strip() == "")).to_numpy()
            mark(missing, "id is missing", "id is missing")
            coords = {}
            for canon in ("latitude", "longitude"):
                coords[canon], why, kind = self._coordinate(table, canon)
                mark(kind != None, why, kind)  # noqa: E711
            ok = kinds == None  # noqa: E711
            dup, first = seen.duplicates(ids[ok].reset_index(drop=True), rows[ok])
            if dup.any():
                at = np.flatnonzero(ok)[dup]
                reasons[at] = [f"duplicate id (first at row {f + 1})" for f in first[dup]]
                kinds[at] = "duplicate id"
            bad = kinds != None  # noqa: E711
            if bad.any():
                if self.strict:
                    r = int(np.flatnonzero(bad)[0])
                    raise InputError(
                        f"{where(self.path, int(rows[r]), self.fmt)}: {reasons[r]} (--strict "
                        "stops at the first bad row; without it bad rows are written to the "
                        "rejects file and counted)"
                    )
                self.rejects.add(
                    rows[bad], ids.to_numpy(dtype=object)[bad], reasons[bad], kinds[bad]
                )
            ok = ~bad
            for canon in LABEL_COLUMNS:
                if canon in self.source:
                    col = table[self.source[canon]]
                    if not (
                        pa.types.is_string(col.type)
                        or pa.types.is_large_string(col.type)
                        or pa.types.is_null(col.type)
                    ):
                        raise InputError(
                            f"{self.path}: label column {self.source[canon]!r} has type "
                            f"{col.type}; labels must be text"
                        )
            valid = table.filter(pa.array(ok))
            self.rows_valid += valid.num_rows
            lat_ok, lon_ok = coords["latitude"][ok], coords["longitude"][ok]
            degrees = degrees or bool(
                np.any((np.abs(lat_ok) > math.pi / 2) | (np.abs(lon_ok) > math.pi))
            )
            yield Chunk(
                table=valid,
                rows=rows[ok],
                ids=ids.to_numpy(dtype=object)[ok],
                lat=coords["latitude"][ok],
                lon=coords["longitude"][ok],
                source=dict(self.source),
            )
        if not any_rows:
            raise InputError(f"{self.path}: has a header but no rows")
        if self.rows_valid >= RADIAN_ROWS and not degrees:
            raise InputError(
                f"{self.path}: all {self.rows_valid} coordinates lie within ±π/2 latitude and ±π "
                "longitude, open sea off West Africa: they look like radians; convert them to "
                "degrees (× 180/π)"
            )

    def summary(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_valid": self.rows_valid,
            "rows_rejected": self.rejects.total,
            "rejected_by_reason": dict(sorted(self.rejects.counts.items())),
        }


def default_rejects_path(output: Path) -> Path:
    """``out.parquet`` → ``out.rejects.csv`` beside it."""
    name = output.name
    for suffix in (".csv.gz", ".tsv.gz", ".parquet", ".csv", ".tsv", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return output.with_name(f"{name}.rejects.csv")
