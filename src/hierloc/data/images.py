"""Image sources for extraction, and robust decoding.

Sources (each yields ``(id, container, member)`` items, sorted, so every run sees the same
order):

* a folder, searched recursively: id = the path relative to the folder without its suffix;
* a zip archive, or a folder of them in OSV5M's layout (``images/{train,test}/NN.zip``
  holding ``<id>.jpg``): id = the member's file name without suffix;
* WebDataset tar shards (``*.tar``; members ``<key>.jpg|jpeg|png|webp``): id = the key;
* a metadata file (CSV/Parquet) with an id column and a path column; relative paths are
  resolved against ``root`` (default: the metadata file's folder).

Decoding (:mod:`hierloc.data.decode`, re-exported here) never raises: a bad image comes back
with its reason.
"""

from __future__ import annotations

import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from hierloc.data.decode import EMPTY, MAX_PIXELS, NOT_AN_IMAGE, decode, sniff
from hierloc.errors import InputError

__all__ = [
    "EMPTY",
    "MAX_PIXELS",
    "NOT_AN_IMAGE",
    "Item",
    "Opener",
    "collect_items",
    "decode",
    "sniff",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


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
    import pandas as pd  # only for metadata files: photos alone are read without it

    from hierloc.data.formats import table_format as _format

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
