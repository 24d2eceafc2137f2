"""Metadata ingestion: OSV5M's columns as they are, coordinates-only files with a mapping,
chunked reading, and every validation error with its message (rejects file or --strict)."""

from __future__ import annotations

import csv
import re

import numpy as np
import pandas as pd
import pytest

from hierloc.data.metadata import MetadataReader, Rejects, parse_column_map
from hierloc.errors import InputError

OSV5M_COLUMNS = (
    "id latitude longitude thumb_original_url country sequence captured_at lon_bin lat_bin "
    "cell region sub-region city land_cover road_index drive_side climate soil dist_sea "
    "quadtree_10_1000 quadtree_10_5000 unique_region unique_sub-region unique_city "
    "unique_country creator_username creator_id"
).split()


def osv5m_frame(n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({c: [f"{c}{i}" for i in range(n)] for c in OSV5M_COLUMNS})
    df["id"] = np.arange(1000, 1000 + n)
    df["latitude"] = rng.uniform(-60, 60, n)
    df["longitude"] = rng.uniform(-180, 180, n)
    df["country"] = "FR"
    df["region"] = "Île-de-France"
    df["sub-region"] = "Paris"
    df["city"] = "Paris"
    return df


def read_all(reader: MetadataReader):
    chunks = list(reader)
    return chunks, np.concatenate([c.rows for c in chunks]), np.concatenate([c.ids for c in chunks])


def test_osv5m_csv_read_as_is(tmp_path):
    path = tmp_path / "train.csv"
    osv5m_frame().to_csv(path, index=False)
    reader = MetadataReader(path)
    chunks, rows, ids = read_all(reader)
    assert reader.label_columns == ["country", "region", "sub-region", "city"]
    assert list(ids) == [str(i) for i in range(1000, 1006)]
    assert list(chunks[0].labels("region")) == ["Île-de-France"] * 6
    assert reader.summary()["rows_rejected"] == 0


def test_coordinates_only_with_mapping(tmp_path):
    path = tmp_path / "mp16.parquet"
    pd.DataFrame({"IMG_ID": ["a", "b"], "LAT": [1.5, -2.0], "LON": [3.0, 179.0]}).to_parquet(path)
    reader = MetadataReader(path, columns=parse_column_map("lat=LAT,lon=LON,id=IMG_ID"))
    chunks, rows, ids = read_all(reader)
    assert list(ids) == ["a", "b"] and reader.label_columns == []
    assert np.allclose(np.concatenate([c.lat for c in chunks]), [1.5, -2.0])
    assert chunks[0].labels("country") is None


@pytest.mark.parametrize(
    "spec,message",
    [
        ("lat", "is not NAME=COLUMN"),
        ("latt=LAT", "unknown name 'latt' (did you mean 'latitude'?)"),
        ("lat=", "lat= needs a column name"),
    ],
)
def test_column_map_errors(spec, message):
    with pytest.raises(InputError, match=re.escape(message)):
        parse_column_map(spec)


def test_mapping_to_a_missing_column_and_missing_required_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("IMG,LAT,LONG\na,1,2\n")
    with pytest.raises(InputError, match="maps latitude to 'LATX'.*did you mean 'LAT'"):
        MetadataReader(path, columns=parse_column_map("id=IMG,lat=LATX,lon=LONG"))
    with pytest.raises(InputError, match="missing column 'id'.*--columns id="):
        MetadataReader(path)


BAD_ROWS = """id,latitude,longitude,country
a,10,20,FR
b,abc,20,FR
c,95,20,FR
,10,20,FR
a,11,21,FR
d,,20,FR
e,10,inf,FR
f,10,-200,FR
g,-90,180,FR
"""
EXPECTED_REJECTS = [
    ("2", "b", "latitude 'abc' is not a number"),
    ("3", "c", "latitude 95 is outside [-90, 90]"),
    ("4", "", "id is missing"),
    ("5", "a", "duplicate id (first at row 1)"),
    ("6", "d", "latitude is empty"),
    ("7", "e", "longitude is missing or not finite"),
    ("8", "f", "longitude -200 is outside [-180, 180]"),
]


def test_every_validation_error_is_rejected_with_its_reason(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(BAD_ROWS)
    rejects = Rejects(tmp_path / "rejects.csv")
    reader = MetadataReader(path, rejects=rejects)
    chunks, rows, ids = read_all(reader)
    rejects.close()
    assert list(ids) == ["a", "g"] and list(rows) == [0, 8]
    with open(tmp_path / "rejects.csv") as f:
        got = [tuple(r) for r in csv.reader(f)][1:]
    assert got == EXPECTED_REJECTS
    s = reader.summary()
    assert (s["rows_read"], s["rows_valid"], s["rows_rejected"]) == (9, 2, 7)
    assert s["rejected_by_reason"]["duplicate id"] == 1


def test_strict_stops_at_the_first_bad_row(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(BAD_ROWS)
    with pytest.raises(
        InputError, match=r"m.csv: row 2 \(line 3\): latitude 'abc' is not a number"
    ):
        list(MetadataReader(path, strict=True))


def test_duplicates_across_chunks_and_streaming(tmp_path):
    n = 5000
    df = pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(n)],
            "latitude": np.linspace(-80, 80, n),
            "longitude": np.linspace(-170, 170, n),
        }
    )
    df.loc[4321, "id"] = "x17"  # a duplicate far from its first occurrence
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    rejects = Rejects()
    reader = MetadataReader(path, rejects=rejects, chunk_rows=1000)
    chunks, rows, ids = read_all(reader)
    assert len(chunks) == 5
    assert len(ids) == n - 1 and 4321 not in rows
    assert rejects.counts == {"duplicate id": 1}
    one_shot = read_all(MetadataReader(path, chunk_rows=100_000))
    assert np.array_equal(one_shot[2], ids)


def test_label_columns_must_be_text(tmp_path):
    path = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["a"], "latitude": [1.0], "longitude": [2.0], "region": [3.5]}).to_parquet(
        path
    )
    with pytest.raises(InputError, match="label column 'region' has type double"):
        list(MetadataReader(path))


def test_empty_and_header_only_files(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("")
    with pytest.raises(InputError, match="file is empty"):
        MetadataReader(path)
    path.write_text("id,latitude,longitude\n")
    with pytest.raises(InputError, match="no rows"):
        list(MetadataReader(path))


def test_coordinates_in_radians_are_refused_not_read_as_degrees(tmp_path):
    """Paris, New York and Sydney in radians lie in the ±π/2, ±π box (open sea in degrees):
    refused with the conversion; the same places in degrees, and one degree row among
    radian-looking ones, are read."""
    rad = np.radians([[48.85, 2.35], [40.71, -74.0], [-33.87, 151.21]])
    pd.DataFrame({"id": list("abc"), "latitude": rad[:, 0], "longitude": rad[:, 1]}).to_csv(
        tmp_path / "rad.csv", index=False
    )
    with pytest.raises(InputError, match=r"rad\.csv: all 3 coordinates .* radians.*180/π"):
        list(MetadataReader(tmp_path / "rad.csv"))
    deg = pd.DataFrame({"id": list("abcd"), "latitude": [*rad[:, 0], 48.85]})
    deg["longitude"] = [*rad[:, 1], 2.35]
    deg.to_csv(tmp_path / "deg.csv", index=False)
    assert sum(len(c.ids) for c in MetadataReader(tmp_path / "deg.csv")) == 4
