"""Metrics against independent references: OSV5M's official outputs (../shared/fixtures),
reverse_geocoder.search itself, closed-form distances, and hand-counted toy cases."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest
import reverse_geocoder

from hierloc.eval import distance_metrics, entity_level_accuracy, osv5m_level_accuracy
from hierloc.eval.score import score_frames
from hierloc.geo import haversine_km
from hierloc.geo.geonames import default_gazetteer

LEVEL_KEYS = {
    "acc_country": "Accuracy_country",
    "acc_region": "Accuracy_region",
    "acc_subregion": "Accuracy_sub-region",
    "acc_city": "Accuracy_city",
}
RADIUS_KEYS = {f"acc_{r}km": f"Accuracy_{r}_km_radius" for r in (1, 25, 200, 750, 2500)}
TRUTH_COLUMNS = ["unique_country", "unique_region", "unique_sub-region", "unique_city"]


def parity_frames(fx: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    ids = [f"img{i}" for i in range(len(fx["pred_lat"]))]
    pred = pd.DataFrame({"id": ids, "latitude": fx["pred_lat"], "longitude": fx["pred_lon"]})
    truth = pd.DataFrame(
        {"id": ids, "latitude": fx["true_lat"], "longitude": fx["true_lon"]}
        | {c: fx[c] for c in TRUTH_COLUMNS}
    )
    return pred, truth


def assert_matches_official(result: dict, expected: dict) -> None:
    n = result["n"]
    assert n == 2000
    assert result["mean_km"] == pytest.approx(expected["Haversine"], rel=1e-4)
    assert result["geoscore"] == pytest.approx(expected["Geoguessr"], rel=1e-4)
    for ours, theirs in {**RADIUS_KEYS, **LEVEL_KEYS}.items():
        assert abs(result[ours] - expected[theirs]) <= 1 / n, ours


def test_osv5m_parity_python_api(osv5m_parity):
    pred, truth = parity_frames(osv5m_parity)
    result = score_frames(pred, truth, protocol="osv5m").to_dict()
    assert result["protocol"] == "osv5m"
    assert_matches_official(result, osv5m_parity["expected"])


def test_haversine_closed_forms():
    # quarter meridian, equator quarter, antipodes, identical points, antimeridian crossing
    R = 6371.0
    assert haversine_km(0, 0, 90, 0) == pytest.approx(math.pi / 2 * R, rel=1e-12)
    assert haversine_km(0, 0, 0, 90) == pytest.approx(math.pi / 2 * R, rel=1e-12)
    # antipodes: the haversine form is ill-conditioned there (a = 1 − O(eps))
    assert haversine_km(10, 20, -10, -160) == pytest.approx(math.pi * R, rel=1e-7)
    assert haversine_km(45.5, 7.25, 45.5, 7.25) == 0.0
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(math.pi / 180 * R, rel=1e-9)


def test_haversine_torch_matches_numpy():
    import torch

    rng = np.random.default_rng(0)
    a = rng.uniform(-90, 90, (4, 100))
    a[1::2] = rng.uniform(-180, 180, (2, 100))
    ref = haversine_km(*a)
    got = haversine_km(*(torch.tensor(x) for x in a)).numpy()
    assert np.allclose(got, ref, rtol=1e-12)


def test_distance_metrics_strict_thresholds_and_median():
    d = np.array([0.0, 1.0, 24.999, 25.0, 200.0, 3000.0])
    m = distance_metrics(d)
    assert m["acc_1km"] == pytest.approx(1 / 6)  # 1.0 is not < 1
    assert m["acc_25km"] == pytest.approx(3 / 6)
    assert m["acc_200km"] == pytest.approx(4 / 6)
    assert m["acc_2500km"] == pytest.approx(5 / 6)
    assert m["median_km"] == pytest.approx((24.999 + 25.0) / 2)
    assert m["mean_km"] == pytest.approx(d.mean())
    assert m["geoscore"] == pytest.approx(np.mean(5000 * np.exp(-d / 1492.7)))


def test_gazetteer_lookup_equals_reverse_geocoder_search():
    """Our vectorised lookup returns exactly what reverse_geocoder.search(mode=1) returns."""
    rng = np.random.default_rng(7)
    lat = rng.uniform(-89.9, 89.9, 3000)
    lon = rng.uniform(-180, 180, 3000)
    lon[:100] = rng.choice([-180.0, 180.0, -179.99, 179.99], 100)  # antimeridian: no wrap
    gaz = default_gazetteer()
    idx = gaz.nearest(lat, lon)
    with contextlib.redirect_stdout(io.StringIO()):
        found = reverse_geocoder.search(list(zip(lat.tolist(), lon.tolist(), strict=True)), mode=1)
    for level, fields in {
        "country": ["cc"],
        "region": ["admin1", "cc"],
        "subregion": ["admin2", "admin1", "cc"],
        "city": ["name", "admin2", "admin1", "cc"],
    }.items():
        expected = ["_".join(r[f] for f in fields) for r in found]
        assert list(gaz.level_keys(level)[idx]) == expected, level


def _labels_at(lat, lon):
    with contextlib.redirect_stdout(io.StringIO()):
        r = reverse_geocoder.search([(lat, lon)], mode=1)[0]
    return {
        "country": r["cc"],
        "region": f"{r['admin1']}_{r['cc']}",
        "subregion": f"{r['admin2']}_{r['admin1']}_{r['cc']}",
        "city": f"{r['name']}_{r['admin2']}_{r['admin1']}_{r['cc']}",
    }


def test_osv5m_nan_rule_default_and_clean():
    """Hand-counted: the literal string 'nan' leaves the denominator, 'NaN', '' and None stay
    (and can never be correct); --clean drops all of them and reads 'NaN' parts as ''."""
    lat, lon = np.array([48.8566] * 6), np.array([2.3522] * 6)
    right = _labels_at(48.8566, 2.3522)["country"]  # FR
    country = pd.Series([right, right, "nan", "NaN", "", None], dtype=object)
    hits = osv5m_level_accuracy(lat, lon, {"country": country})
    assert hits["country"] == (2, 5)
    hits = osv5m_level_accuracy(lat, lon, {"country": country}, clean=True)
    assert hits["country"] == (2, 2)

    # a key with a missing parent part: OSV5M writes 'NaN', the geocoder ''
    city = _labels_at(37.5665, 126.9780)["city"]
    parts = city.split("_")
    with_nan = "_".join(p or "NaN" for p in parts)
    assert with_nan != city, "the Seoul entry is expected to lack admin2"
    labels = pd.Series([with_nan, "NaN_" + "_".join(parts[1:])], dtype=object)
    lat2, lon2 = np.array([37.5665] * 2), np.array([126.9780] * 2)
    assert osv5m_level_accuracy(lat2, lon2, {"city": labels})["city"] == (0, 2)
    assert osv5m_level_accuracy(lat2, lon2, {"city": labels}, clean=True)["city"] == (1, 1)


def test_entity_accuracy_hand_counted():
    pred = {"country": pd.Series(["FR", "FR", "DE", "IT"]), "city": pd.Series(["a", "b", "c", "d"])}
    truth = {
        "country": pd.Series(["FR", "DE", "DE", None], dtype=object),
        "city": pd.Series(["a", "nan", "x", ""], dtype=object),
    }
    out = entity_level_accuracy(pred, truth)
    assert out == {"country": (2, 3), "city": (1, 2)}


def test_score_frames_validates_like_files():
    from hierloc.errors import InputError

    pred = pd.DataFrame({"id": ["a", "b"], "latitude": [10.0, 91.0], "longitude": [0.0, 0.0]})
    truth = pred.assign(latitude=[10.0, 20.0])
    with pytest.raises(InputError, match=r"<predictions>: row 2, column 'latitude'.*outside"):
        score_frames(pred, truth)
    with pytest.raises(InputError, match="<truth>: missing column 'longitude'"):
        score_frames(truth, truth.drop(columns="longitude"))


def test_pairwise_km_equals_haversine():
    import torch

    from hierloc.geo.haversine import pairwise_km, unit_vectors

    rng = np.random.default_rng(4)
    a = np.column_stack([rng.uniform(-90, 90, 30), rng.uniform(-180, 180, 30)])
    b = np.column_stack([rng.uniform(-90, 90, 40), rng.uniform(-180, 180, 40)])
    b[0] = a[0] + [1e-3, 1e-3]  # a close pair (~150 m)
    ref = haversine_km(a[:, None, 0], a[:, None, 1], b[None, :, 0], b[None, :, 1])
    got = pairwise_km(unit_vectors(a[:, 0], a[:, 1]), unit_vectors(b[:, 0], b[:, 1]))
    assert np.allclose(got, ref, rtol=1e-9, atol=1e-6)
    t = pairwise_km(
        unit_vectors(torch.tensor(a[:, 0]), torch.tensor(a[:, 1])),
        unit_vectors(torch.tensor(b[:, 0]), torch.tensor(b[:, 1])),
    ).numpy()
    assert np.allclose(t, ref, rtol=1e-9, atol=1e-6)


def test_calibration_error_by_hand():
    """Two bins, hand-computed: [0.1, 0.2) holds 0.15, 0.15 with one right (gap 0.35), [0.3,
    0.4) holds 0.35, 0.35 both right (gap 0.65): ECE = ½·0.35 + ½·0.65 = 0.5."""
    import numpy as np

    from hierloc.eval.metrics import calibration_error, level_calibration

    res = calibration_error(np.array([0.15, 0.15, 0.35, 0.35]), np.array([1.0, 0.0, 1.0, 1.0]))
    assert abs(res["ece"] - 0.5) < 1e-12 and res["accuracy"] == 0.75
    assert [(b, n) for b, n, _, _ in res["bins"]] == [(1, 2), (3, 2)]
    # per level, top answers against the truth's ids; a level without confidences is left out
    preds = pd.DataFrame(
        {
            "country_id": ["FR", "FR", "DE", "IT"],
            "country_confidence": [0.15, 0.15, 0.35, 0.35],
            "city_id": ["a", "b", "c", "d"],
            "city_confidence": [np.nan] * 4,
        }
    )
    truth = pd.DataFrame({"country_id": ["FR", "ES", "DE", "IT"], "city_id": list("abcd")})
    cal = level_calibration(preds, truth)
    assert list(cal) == ["country"] and abs(cal["country"]["ece"] - 0.5) < 1e-12
