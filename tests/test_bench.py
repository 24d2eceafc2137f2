"""The benchmarks' code paths on small inputs (their timings are reported, never asserted)."""

from __future__ import annotations

import pytest

from hierloc.bench import cells, geocode, hierarchy


def test_bench_geocode_small(tmp_path):
    r = geocode.run(rows=3000, compare_rows=500, workdir=tmp_path)
    assert r["summary"]["rows_written"] == 3000 and r["summary"]["rows_rejected"] == 0
    assert r["seconds"] > 0 and r["speedup_vs_reverse_geocoder"] > 0


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
    assert r["rows"] == 8 and r["bare_forward_images_per_s"] > 0 and r["ratio"] > 0


def test_bench_train_quick():
    from hierloc.bench import train

    r = train.run(batch_size=16, steps=1, quick=True)
    assert r["images_per_s"] > 0 and r["peak_rss_gb"] > 0 and r["osv5m_epoch_hours"] > 0
    assert set(r) >= {"images_per_s", "peak_rss_gb", "osv5m_epoch_hours"}


def test_bench_search_quick_through_the_cli():
    """The stable JSON names other tools read; the beam finds the query's own city (queries
    lie next to a city), and the float16 index is smaller."""
    pytest.importorskip("faiss", reason="bench search compares with FAISS (an extra)")
    import json

    from typer.testing import CliRunner

    from hierloc.cli import app

    res = CliRunner().invoke(app, ["bench", "search", "--quick", "--batch", "256"])
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
    assert set(r) >= names and all(r[k] > 0 for k in names)
    assert r["index_bytes_fp16"] < r["index_bytes"]
    assert r["beam_top1_city_is_query_city"] > 0.9
