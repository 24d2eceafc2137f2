"""The benchmarks' code paths on small inputs (their timings are reported, never asserted)."""

from __future__ import annotations

import pytest

from hierloc.bench import cells, geocode, hierarchy


def test_bench_geocode_small(tmp_path):
    """Every generated row geocoded, none rejected, and the report's derived figures follow
    from its measurements (rows / seconds; the target scaled from 4.7 M rows in 60 s); the
    speed-up's inputs are rounded to the millisecond, so it is not recomputed here."""
    r = geocode.run(rows=3000, compare_rows=500, workdir=tmp_path)
    assert r["summary"]["rows_written"] == 3000 and r["summary"]["rows_rejected"] == 0
    assert r["rows_per_second"] == round(3000 / r["seconds"])
    assert r["target_seconds"] == round(60.0 * 3000 / 4_700_000, 1) and r["compare_rows"] == 500


def test_bench_cells_small():
    r = cells.run(rows=5000, compare_rows=300)
    assert r["ids_identical"] is True and len(r["cells_per_partition"]) == 7


def test_bench_hierarchy_small_with_embeddings(tmp_path):
    counts = (5, 20, 60, 300)
    r = hierarchy.run(rows=2000, dim=8, workdir=tmp_path, counts=counts)
    assert r["entities"] == dict(
        zip(("country", "region", "subregion", "city"), counts, strict=True)
    )
    assert r["small_entities"] == r["entities"]


def test_bench_extract_small():
    from hierloc.bench import extract

    r = extract.run(images=8, batch_size=4, workers=0)
    assert r["rows"] == 8 and r["images"] == 8 and r["workers"] == 0
    assert r["ratio"] == pytest.approx(
        r["extract_images_per_s"] / r["bare_forward_images_per_s"], abs=0.01
    )


def test_bench_train_quick():
    from hierloc.bench import train

    r = train.run(batch_size=16, steps=1, quick=True)
    assert set(r) >= {"images_per_s", "peak_rss_gb", "osv5m_epoch_hours"}
    assert r["batch_size"] == 16 and r["steps"] == 1
    want = round(train.OSV5M_TRAIN_IMAGES / r["images_per_s"] / 3600, 1)
    assert r["osv5m_epoch_hours"] == pytest.approx(want, abs=0.11)  # from the rounded rate


def test_bench_search_quick_through_the_cli():
    """The stable JSON names other tools read; the beam finds the query's own city (queries
    lie next to a city), and the float16 index is smaller; ``--profile``: every level timed,
    level 0 scoring every country, each level scoring at least the beam (width 10) exactly."""
    import json

    from typer.testing import CliRunner

    from hierloc.cli import app

    res = CliRunner().invoke(app, ["bench", "search", "--quick", "--batch", "256", "--profile"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    names = {
        "beam_qps_b1",
        "beam_qps_b1024",
        "flat_qps_b1024",
        "faiss_qps_b1024",
        "exhaustive_qps_b1024",
        "index_bytes",
        "image_index_bytes",
    }
    assert set(r) >= names
    assert r["index_bytes_fp16"] < r["index_bytes"] < r["image_index_bytes"]
    assert r["beam_top1_city_is_query_city"] > 0.9
    for stage in (r["profile"]["batch"], r["profile"]["single"]):
        levels = stage["levels"]
        assert [lv["level"] for lv in levels] == [0, 1, 2, 3]
        assert levels[0]["candidates_per_query"] == r["entities"]["country"]
        assert all(lv["exact_per_query"] >= min(10, lv["candidates_per_query"]) for lv in levels)
        assert 0 < stage["fraction_of_copy_bandwidth"]


@pytest.mark.parametrize(
    "args",
    [
        ["score", "--rows", "2000", "--compare-rows", "100"],
        ["bluemarble", "--patches", "16", "--train", "30", "--test", "20"],
    ],
)
def test_each_bench_command_runs_quick_through_the_cli(args, tmp_path):
    """The commands not run above (score, bluemarble) end to end at a tiny size through the
    CLI: exit 0, a JSON report on stdout equal to the one written with -o."""
    import json

    from typer.testing import CliRunner

    from hierloc.cli import app

    out = tmp_path / "report.json"
    extra = ["--workdir", str(tmp_path)] if args[0] in ("score", "geocode") else []
    res = CliRunner().invoke(app, ["bench", *args, *extra, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == json.loads(out.read_text())


def test_bench_search_scale_quick_through_the_cli(tmp_path):
    """Two small worlds: the counts scale every level alike, 20 image vectors per entity, the
    exported ONNX beam answers with the Python kernel's top-1 paths, the growth plot is a PNG,
    and the slopes are the log-ratios of the reported rates."""
    import json
    import math

    from typer.testing import CliRunner

    from hierloc.bench.hierarchy import PAPER_COUNTS
    from hierloc.cli import app

    out, png = tmp_path / "scale.json", tmp_path / "growth.png"
    res = CliRunner().invoke(
        app,
        ["bench", "search", "--scale", "--quick", "--batch", "64", "-o", str(out)]
        + ["--plot", str(png)],
    )
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    w = r["worlds"]
    assert [x["counts"] for x in w] == [
        [max(8, round(c * f)) for c in PAPER_COUNTS] for f in (0.01, 0.03)
    ]
    for x in w:
        assert x["entities"] == sum(x["counts"]) and x["images"] == 20 * x["entities"]
        assert x["onnx_top1_equal"] == 1.0 and x["exhaustive"] == "measured"
        assert x["exhaustive_index_mb"] == round(x["images"] * 129 * 4 / 1e6, 1)
    want = math.log(w[1]["flat_qps_b64"] / w[0]["flat_qps_b64"]) / math.log(
        w[1]["entities"] / w[0]["entities"]
    )
    assert r["slopes"]["flat"] == pytest.approx(want, abs=0.02)  # from the rounded rates
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_scale_extrapolates_exhaustive_beyond_the_memory_budget():
    """A world whose image vectors exceed the budget gets retrieval's rate from the largest
    measured world, scaled by the vector counts' ratio (cost linear in the vectors)."""
    from hierloc.bench import scale

    small = scale.scaled_counts(0.01)
    budget = 20 * sum(small) * 129 * 4  # the first world's vectors fit, the second's do not
    r = scale.run((0.01, 0.02), batch=16, repeats=1, memory_budget=budget)
    a, b = r["worlds"]
    assert a["exhaustive"] == "measured" and b["exhaustive"].startswith("extrapolated")
    assert b["exhaustive_qps_b16"] == pytest.approx(
        a["exhaustive_qps_b16"] * a["images"] / b["images"], rel=1e-3
    )
    assert r["slopes"]["exhaustive_measured"] is None
