"""``hierloc bench hierarchy``: build the hierarchy from N generated records with the paper's
entity counts (233 countries, 4,946 regions, 29,214 subregions, 209,894 cities), with labels
only (target: 5 million rows in at most 60 s) or with D-dimensional float16 embeddings
(target: 5 million × 1024 in at most 5 minutes). Side by side, the same build on a fifth of
the rows: peak memory should follow the entities, not the rows."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hierloc.bench._measure import run_isolated
from hierloc.hierarchy.pipeline import build_hierarchy

PAPER_COUNTS = (233, 4946, 29214, 209894)


def generate(path: Path, rows: int, seed: int = 0, counts: tuple = PAPER_COUNTS) -> None:
    """Metadata with ``counts`` entities per level (every entity used at least once)."""
    import pycountry  # country names for the synthetic metadata, only for this benchmark

    rng = np.random.default_rng(seed)
    n_c, n_r, n_s, n_city = counts
    if rows < n_city:
        raise ValueError(f"need at least {n_city} rows to use every city")
    codes = np.array(sorted(c.alpha_2 for c in pycountry.countries)[:n_c], dtype=object)

    def parents(n_child, n_parent):
        return np.concatenate([np.arange(n_parent), rng.integers(0, n_parent, n_child - n_parent)])

    region_country = parents(n_r, n_c)
    sub_region = parents(n_s, n_r)
    city_sub = parents(n_city, n_s)
    city_lat = rng.uniform(-60, 70, n_city)
    city_lon = rng.uniform(-180, 180, n_city)
    extra = np.minimum(rng.zipf(1.3, rows - n_city) - 1, n_city - 1)
    city = np.concatenate([np.arange(n_city), rng.permutation(n_city)[extra]])
    city = rng.permutation(city)
    sub = city_sub[city]
    region = sub_region[sub]
    frame = pd.DataFrame(
        {
            "id": np.char.add("img", np.arange(rows).astype(str)).astype(object),
            "latitude": np.clip(city_lat[city] + rng.normal(0, 0.02, rows), -90, 90),
            "longitude": (city_lon[city] + rng.normal(0, 0.02, rows) + 180) % 360 - 180,
            "country": codes[region_country[region]],
            "region": np.char.add("Region ", region.astype(str)).astype(object),
            "sub-region": np.char.add("Subregion ", sub.astype(str)).astype(object),
            "city": np.char.add("City ", city.astype(str)).astype(object),
        }
    )
    frame.to_parquet(path, index=False)


def generate_store(path: Path, metadata: Path, dim: int, seed: int = 0, block: int = 200_000):
    """A feature store with random float16 embeddings for every id of ``metadata``."""
    ids = pq.read_table(metadata, columns=["id"])["id"]
    n = len(ids)
    path.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap(
        path / "features.npy", mode="w+", dtype=np.float16, shape=(n, dim)
    )
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        stop = min(n, start + block)
        mm[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    mm.flush()
    del mm
    pq.write_table(pa.table({"id": ids}), path / "ids.parquet")
    manifest = {
        "format": "hierloc-features",
        "version": 1,
        "encoder": "random",
        "dim": dim,
        "dtype": "float16",
        "rows": n,
    }
    (path / "manifest.json").write_text(json.dumps(manifest))


def _build(metadata: str, out: str, features: str | None) -> dict:
    m = build_hierarchy(metadata, out, features=features, gazetteer=None)
    return {"entities": m["entities"], "records": m["records"]}


def run(
    rows: int = 5_000_000,
    dim: int = 0,
    workdir: Path | None = None,
    counts: tuple[int, int, int, int] = PAPER_COUNTS,
) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        generate(tmp / "meta.parquet", rows, counts=counts)
        small_rows = max(counts[-1], rows // 5)
        generate(tmp / "small.parquet", small_rows, seed=1, counts=counts)  # same entities
        store = None
        if dim:
            generate_store(tmp / "store", tmp / "meta.parquet", dim)
            store = str(tmp / "store")
        t_gen = time.perf_counter() - t0
        full = run_isolated(_build, str(tmp / "meta.parquet"), str(tmp / "h"), store)
        small = run_isolated(_build, str(tmp / "small.parquet"), str(tmp / "h_small"), store)
    target = (300.0 if dim else 60.0) * rows / 5_000_000
    return {
        "rows": rows,
        "dim": dim,
        "seconds_generate": round(t_gen, 1),
        "seconds": full["seconds"],
        "rows_per_second": round(rows / full["seconds"]),
        "target_seconds": round(target, 1),
        "entities": full["result"]["entities"],
        "peak_anon_mb": full["peak_anon_mb"],
        "small_rows": small_rows,
        "small_seconds": small["seconds"],
        "small_peak_anon_mb": small["peak_anon_mb"],
        "small_entities": small["result"]["entities"],
        "peak_memory_ratio_full_vs_small": round(full["peak_anon_mb"] / small["peak_anon_mb"], 2),
        "rows_ratio_full_vs_small": round(rows / small_rows, 2),
    }
