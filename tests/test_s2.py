"""S2 cell ids against s2sphere (an independent implementation), and the nesting properties
of GeoSURGE's adaptive partitions checked by brute force."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import s2sphere
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.geo import s2
from hierloc.geo.gazetteer import unit_xyz
from hierloc.geo.s2cells import build_partitions

runner = CliRunner()


def reference_ids(lat, lon):
    return np.array(
        [
            s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(a, b)).id()
            for a, b in zip(lat, lon, strict=True)
        ],
        dtype=np.uint64,
    )


def special_points():
    lat = [90, -90, 0, 0, 0, 0, 45, -45, 35.264389682754654, 0, 89.999999, -0.0]
    lon = [0, 0, 180, -180, 90, -90, 45, 135, 45, 0.0, 179.999999, -0.0]
    return np.array(lat, float), np.array(lon, float)


def test_leaf_ids_parents_and_tokens_match_s2sphere():
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(-90, 90, 3000), special_points()[0]])
    lon = np.concatenate([rng.uniform(-180, 180, 3000), special_points()[1]])
    ids, *_ = s2.leaf_cells(unit_xyz(lat, lon))
    ref = reference_ids(lat, lon)
    assert np.array_equal(ids, ref)
    for level in (0, 1, 7, 13, 22, 29):
        want = [s2sphere.CellId(int(r)).parent(level) for r in ref[:300]]
        got = s2.parent(ids[:300], level)
        assert np.array_equal(got, np.array([w.id() for w in want], dtype=np.uint64))
        assert list(s2.token(got)) == [w.to_token() for w in want]
        assert set(s2.cell_level(got)) == {level}
    kids = s2.children(s2.parent(ids[:5], 4), np.full(5, 4))
    for row, r in zip(kids, ref[:5], strict=True):
        want = [c.id() for c in s2sphere.CellId(int(r)).parent(4).children()]
        assert list(row) == want


def clustered_points(n=20000, seed=1):
    rng = np.random.default_rng(seed)
    centres = rng.uniform([-60, -180], [70, 180], size=(40, 2))
    k = rng.integers(0, 40, n)
    lat = np.clip(centres[k, 0] + rng.normal(0, 2, n), -90, 90)
    lon = (centres[k, 1] + rng.normal(0, 2, n) + 180) % 360 - 180
    return lat, lon


@pytest.mark.parametrize("tau_min", [0, 20])
def test_partitions_nest_and_follow_the_split_rule(tau_min):
    lat, lon = clustered_points()
    taus = (4000, 1500, 600, 200)
    parts, assign = build_partitions(lat, lon, tau_max=taus, tau_min=tau_min)
    leaves, *_ = s2.leaf_cells(unit_xyz(lat, lon))
    for p, part in enumerate(parts):
        lo, hi = s2.range_min(part.ids, part.levels), s2.range_max(part.ids, part.levels)
        assert np.all(hi[:-1] < lo[1:])  # disjoint: a sample is in at most one cell
        # brute force: each count is the number of samples inside the cell
        brute = np.array(
            [np.sum((leaves >= a) & (leaves <= b)) for a, b in zip(lo, hi, strict=True)]
        )
        assert np.array_equal(brute, part.counts)
        assert np.all((part.counts <= part.tau_max) | (part.levels == 30))
        assert np.all(part.counts >= max(tau_min, 1))
        # every non-face cell exists because its parent held more than tau_max samples
        nonroot = part.levels > 0
        for cid, lvl in zip(part.ids[nonroot][:200], part.levels[nonroot][:200], strict=True):
            pid = s2.parent(np.array([cid], np.uint64), int(lvl) - 1)
            plo, phi = s2.range_min(pid, lvl - 1), s2.range_max(pid, lvl - 1)
            assert np.sum((leaves >= plo) & (leaves <= phi)) > part.tau_max
        # assignments agree with the ranges
        a = assign[:, p]
        inside = a >= 0
        assert np.all(leaves[inside] >= lo[a[inside]]) and np.all(leaves[inside] <= hi[a[inside]])
        assert np.bincount(a[inside], minlength=len(part)).tolist() == part.counts.tolist()
        if p:
            # exactly one ancestor per coarser partition, and it really contains the cell
            coarse = parts[p - 1]
            assert np.all(part.parent >= 0)
            plevels = coarse.levels[part.parent]
            assert np.all(plevels <= part.levels)
            got = np.array(
                [
                    s2.parent(np.array([c], np.uint64), int(lv))[0]
                    for c, lv in zip(part.ids, plevels, strict=True)
                ]
            )
            assert np.array_equal(got, coarse.ids[part.parent])
    # every finest cell has exactly one ancestor in each coarser partition
    row = np.arange(len(parts[-1]))
    for p in range(len(parts) - 1, 0, -1):
        row = parts[p].parent[row]
        assert np.all(row >= 0) and np.all(row < len(parts[p - 1]))


def test_cell_centres_lie_in_their_cells():
    lat, lon = clustered_points(5000, seed=3)
    parts, _ = build_partitions(lat, lon, tau_max=(800, 100), tau_min=5)
    for part in parts:
        leaf, *_ = s2.leaf_cells(unit_xyz(part.center_lat, part.center_lon))
        got = np.array(
            [
                s2.parent(np.array([x], np.uint64), int(lv))[0]
                for x, lv in zip(leaf, part.levels, strict=True)
            ]
        )
        assert np.array_equal(got, part.ids)


def test_bad_thresholds():
    with pytest.raises(ValueError, match="strictly decreasing"):
        build_partitions(np.zeros(3), np.zeros(3), tau_max=(10, 20))


def test_cells_build_cli_on_osv5m_and_coordinates_only_files(tmp_path):
    lat, lon = clustered_points(3000, seed=4)
    osv = pd.DataFrame(
        {
            "id": np.arange(3000),
            "latitude": lat,
            "longitude": lon,
            "country": "FR",
            "unique_city": "x",
        }
    )
    osv.loc[5, "latitude"] = 123.0  # rejected, counted
    osv.to_csv(tmp_path / "train.csv", index=False)
    res = runner.invoke(
        app,
        [
            "cells",
            "build",
            str(tmp_path / "train.csv"),
            "-o",
            str(tmp_path / "cells"),
            "--tau-max",
            "800,300,100",
            "--tau-min",
            "10",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["rows_rejected"] == 1
    cells = pd.read_parquet(tmp_path / "cells" / "cells.parquet")
    assign = pd.read_parquet(tmp_path / "cells" / "assignments.parquet")
    assert len(assign) == 2999 and list(assign.columns) == ["id", "p0", "p1", "p2"]
    assert cells.groupby("partition").size().tolist() == summary["cells"]
    assert (cells["token"].str.len() > 0).all()
    coords = pd.DataFrame({"IMG": np.arange(3000), "LAT": lat, "LON": lon})
    coords.to_parquet(tmp_path / "mp16.parquet")
    res = runner.invoke(
        app,
        [
            "cells",
            "build",
            str(tmp_path / "mp16.parquet"),
            "-o",
            str(tmp_path / "cells2"),
            "--columns",
            "id=IMG,lat=LAT,lon=LON",
            "--tau-max",
            "800,300,100",
            "--tau-min",
            "10",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "cells",
            "build",
            str(tmp_path / "mp16.parquet"),
            "-o",
            str(tmp_path / "cells3"),
            "--tau-max",
            "8x",
        ],
    )
    assert res.exit_code == 2 and "--tau-max" in res.stderr
    for bad in ("3,6", "100,-5", "100,100"):  # not strictly decreasing, or not positive
        res = runner.invoke(
            app,
            [
                "cells",
                "build",
                str(tmp_path / "mp16.parquet"),
                "-o",
                str(tmp_path / "cells4"),
                "--columns",
                "id=IMG,lat=LAT,lon=LON",
                "--tau-max",
                bad,
            ],
        )
        assert res.exit_code == 2 and "strictly decreasing" in res.stderr, res.output
        assert len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "cells4").exists()
