"""``hierloc data from-photos``: a metadata file from the EXIF GPS of a user's own photos.

For each image under a folder (recursive): id (the relative path without suffix, as
``hierloc extract`` names it), ``latitude``/``longitude`` in decimal degrees from the GPS IFD
(degrees / minutes / seconds rationals, N/S/E/W references), ``path`` (relative to the output
file's folder, as every reader of a metadata file resolves it; absolute when there is no
relative way) and
``captured_at`` (EXIF DateTimeOriginal, when present). Photos without GPS, with malformed
GPS or out-of-range coordinates, or that cannot be read, go to the rejects file with the
reason and are counted — never silently dropped.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from pathlib import Path

import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from hierloc.data.decode import gps_from_exif
from hierloc.data.images import IMAGE_SUFFIXES
from hierloc.data.metadata import default_rejects_path
from hierloc.data.writers import AtomicTableWriter
from hierloc.errors import InputError

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 0x9003


def _path_from(photo: Path, base: Path) -> str:
    """``photo`` relative to ``base`` (the metadata file's folder), or absolute."""
    try:
        return Path(os.path.relpath(photo.resolve(), base.resolve())).as_posix()
    except ValueError:  # another drive: no relative path exists
        return photo.resolve().as_posix()


def from_photos(folder: str | Path, output: str | Path, rejects: str | Path | None = None) -> dict:
    folder, output = Path(folder), Path(output)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of photos")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise InputError(f"{folder}: no photos found ({', '.join(IMAGE_SUFFIXES)})")
    rows = {"id": [], "latitude": [], "longitude": [], "path": [], "captured_at": []}
    bad: list[tuple[str, str]] = []
    names: list[str] = []  # each kept row's path under the folder
    kinds: Counter = Counter()
    for p in files:
        rel = p.relative_to(folder).as_posix()
        with warnings.catch_warnings(record=True) as caught:  # Pillow's "Corrupt EXIF data"
            warnings.simplefilter("always")
            try:
                with Image.open(p) as img:
                    exif = img.getexif()
                lat, lon = gps_from_exif(exif)
            except (UnidentifiedImageError, OSError) as e:
                bad.append((rel, f"unreadable image: {e}"))
                kinds["unreadable image"] += 1
                continue
            except (ValueError, TypeError, ZeroDivisionError) as e:
                reason = str(e) or type(e).__name__
                if caught:  # the GPS was unreadable because the EXIF is damaged: say so
                    reason = f"{reason} ({' '.join(str(caught[0].message).split())})"
                bad.append((rel, reason))
                kinds["no GPS" if reason.startswith("no GPS") else "malformed GPS"] += 1
                continue
        taken = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or exif.get(0x0132)
        rows["id"].append(rel.rsplit(".", 1)[0])
        rows["latitude"].append(lat)
        rows["longitude"].append(lon)
        rows["path"].append(_path_from(p, output.parent))
        names.append(rel)  # as found under the folder: how rejects name a photo
        rows["captured_at"].append(str(taken) if taken else None)
    by_id: dict[str, list[str]] = {}  # x.jpg and x.jpeg: one id, two photos
    for i, rel in zip(rows["id"], names, strict=True):
        by_id.setdefault(i, []).append(rel)
    keep = [len(by_id[i]) == 1 for i in rows["id"]]
    for i, rel, ok in zip(rows["id"], names, keep, strict=True):
        if not ok:
            others = ", ".join(r for r in by_id[i] if r != rel)
            bad.append((rel, f"duplicate id {i!r} (also {others}): rename one of them"))
            kinds["duplicate id"] += 1
    rows = {k: [v for v, ok in zip(col, keep, strict=True) if ok] for k, col in rows.items()}
    with AtomicTableWriter(output) as writer:
        types = {k: pa.float64() if k in ("latitude", "longitude") else pa.string() for k in rows}
        writer.write(pa.table({k: pa.array(v, types[k]) for k, v in rows.items()}))
    rejects_path = Path(rejects) if rejects else default_rejects_path(output)
    if bad:
        with open(rejects_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows(bad)
    return {
        "photos": len(files),
        "with_gps": len(rows["id"]),
        "rejected": len(bad),
        "rejected_by_reason": dict(sorted(kinds.items())),
        "output": str(output),
        "rejects_file": str(rejects_path) if bad else None,
    }
