"""Image sources for extraction, and robust decoding.

Sources (each yields ``(id, container, member)`` items, sorted, so every run sees the same
order):

* a folder, searched recursively: id = the path relative to the folder without its suffix;
* a zip archive, or a folder of them in OSV5M's layout (``images/{train,test}/NN.zip``
  holding ``<id>.jpg``): id = the member's file name without suffix;
* WebDataset tar shards (``*.tar``; members ``<key>.jpg|jpeg|png|webp``): id = the key;
* a metadata file (CSV/Parquet) with an id column and a path column; relative paths are
  resolved against ``root`` (default: the metadata file's folder).

Decoding never raises: a bad image (zero bytes, truncated, corrupt, not an image, above the
pixel limit) comes back with its reason; grayscale, CMYK, palette and alpha images are
converted to RGB (alpha composited on white) and EXIF orientation is applied.
"""

from __future__ import annotations

import io
import tarfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from hierloc.data.tables import _format
from hierloc.errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_PIXELS = 64_000_000  # above this an image is rejected as a possible decompression bomb


@dataclass(frozen=True)
class Item:
    id: str
    container: str  # a file path (folder source, metadata) or an archive path
    member: str | None  # the member inside a zip/tar, None for plain files
    kind: str  # "file" | "zip" | "tar" | "bytes" (held in memory: an upload)
    data: bytes | None = None  # the bytes of a "bytes" item


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def _stem(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[0] if "." in base else base


def folder_items(root: Path) -> list[Item]:
    items = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and _is_image(p.name):
            rel = p.relative_to(root).as_posix()
            items.append(Item(rel.rsplit(".", 1)[0], str(p), None, "file"))
    return items


def zip_items(path: Path) -> list[Item]:
    try:
        with zipfile.ZipFile(path) as z:
            names = sorted(n for n in z.namelist() if _is_image(n) and not n.endswith("/"))
    except (zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a readable zip archive ({e})") from e
    return [Item(_stem(n), str(path), n, "zip") for n in names]


def tar_items(path: Path) -> list[Item]:
    try:
        with tarfile.open(path) as t:
            names = sorted(m.name for m in t.getmembers() if m.isfile() and _is_image(m.name))
    except (tarfile.TarError, OSError) as e:
        raise InputError(f"{path}: not a readable tar shard ({e})") from e
    return [Item(n.rsplit(".", 1)[0].rsplit("/", 1)[-1], str(path), n, "tar") for n in names]


def metadata_items(path: Path, id_column: str, path_column: str, root: Path | None) -> list[Item]:
    fmt = _format(path)
    try:
        if fmt == "csv":
            df = pd.read_csv(
                path, usecols=[id_column, path_column], dtype=str, keep_default_na=False
            )
        else:
            df = pd.read_parquet(path, columns=[id_column, path_column])
    except (ValueError, KeyError) as e:
        raise InputError(
            f"{path}: needs the columns {id_column!r} and {path_column!r} "
            f"(set them with --id-column / --path-column): {e}"
        ) from e
    base = root if root is not None else path.parent
    items = []
    for i, (ident, rel) in enumerate(zip(df[id_column], df[path_column], strict=True)):
        if not isinstance(rel, str) or not rel.strip():
            raise InputError(f"{path}: row {i + 1}, column {path_column!r}: the path is empty")
        p = Path(rel)
        items.append(Item(str(ident), str(p if p.is_absolute() else base / p), None, "file"))
    return items


def collect_items(
    sources: list[Path],
    id_column: str = "id",
    path_column: str = "path",
    root: Path | None = None,
) -> list[Item]:
    """All images of all sources, in a stable order; duplicate ids are an error."""
    items: list[Item] = []
    for src in sources:
        src = Path(src)
        if not src.exists():
            raise InputError(
                f"{src}: does not exist; give image folders, zips, tar shards or a metadata file"
            )
        name = src.name.lower()
        if src.is_dir():
            zips = sorted(src.rglob("*.zip"))
            tars = sorted(src.rglob("*.tar"))
            if zips or tars:
                for z in zips:
                    items += zip_items(z)
                for t in tars:
                    items += tar_items(t)
            else:
                items += folder_items(src)
        elif name.endswith(".zip"):
            items += zip_items(src)
        elif name.endswith(".tar"):
            items += tar_items(src)
        elif name.endswith((".csv", ".csv.gz", ".tsv", ".parquet", ".pq")):
            items += metadata_items(src, id_column, path_column, root)
        elif _is_image(name):
            items.append(Item(_stem(name), str(src), None, "file"))
        else:
            raise InputError(
                f"{src}: unknown input; give image folders, .zip, .tar or a "
                "CSV/Parquet metadata file with a path column"
            )
    if not items:
        raise InputError(f"no images found in {', '.join(map(str, sources))}")
    seen: dict[str, Item] = {}
    for it in items:
        if it.id in seen:
            raise InputError(
                f"image id {it.id!r} appears twice ({seen[it.id].member or seen[it.id].container}"
                f" and {it.member or it.container}); ids must be unique"
            )
        seen[it.id] = it
    return items


class Opener:
    """Reads item bytes; keeps archives open (one instance per DataLoader worker)."""

    def __init__(self) -> None:
        self._zips: dict[str, zipfile.ZipFile] = {}
        self._tars: dict[str, tarfile.TarFile] = {}

    def read(self, item: Item) -> bytes:
        if item.kind == "bytes":
            return item.data or b""
        if item.kind == "file":
            return Path(item.container).read_bytes()
        if item.kind == "zip":
            z = self._zips.get(item.container) or zipfile.ZipFile(item.container)
            self._zips[item.container] = z
            return z.read(item.member)
        t = self._tars.get(item.container) or tarfile.open(item.container)
        self._tars[item.container] = t
        f = t.extractfile(item.member)
        return f.read() if f is not None else b""

    def close(self) -> None:
        for handle in [*self._zips.values(), *self._tars.values()]:
            handle.close()
        self._zips.clear()
        self._tars.clear()


_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


EMPTY = "empty file (0 bytes)"
NOT_AN_IMAGE = "not an image (unrecognised format)"


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (``jpeg``, ``png``, ``webp``, ``gif``, ``bmp``,
    ``tiff``), or ``None``: judged from the bytes, never from a name or a content type."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    return None


def decode(data: bytes, max_pixels: int = MAX_PIXELS):
    """``(PIL RGB image, None)`` or ``(None, reason)``; never raises."""
    if not data:
        return None, EMPTY
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                return None, f"too large: {w}x{h} pixels (limit {max_pixels:,}; possible bomb)"
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(bg, rgba)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return img, None
    except UnidentifiedImageError:
        return None, NOT_AN_IMAGE
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"too large: possible decompression bomb ({e})"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"corrupt or truncated: {msg}"
