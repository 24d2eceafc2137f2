"""The feature store (DESIGN.md): a folder with ``features.npy`` (float16, N×D, memory-mapped),
``ids.parquet`` (row → id) and ``manifest.json`` (encoder, dim, dtype, rows committed, …).

Only the first ``manifest["rows"]`` rows are committed; readers never see more. While an
extraction runs (or after it was killed) the ids of committed rows live in ``ids/part-*.parquet``
listed in the manifest; a finished store has a single ``ids.parquet``. ``features.npy`` is
allocated for every input image, so it can hold unused rows past ``rows`` (rejected images).

Commit protocol (:class:`FeatureStoreWriter`): features are written past the committed rows and
flushed, the ids part is written to a temp name and renamed, then the manifest is replaced
atomically (temp, fsync, rename). A crash at any point leaves the previous manifest, which
names only complete rows and parts; a rerun resumes after ``items_done``.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from hierloc.data.formats import FEATURES_FORMAT
from hierloc.data.ids import IdIndex
from hierloc.data.writers import atomic_path, check_not_input, check_replaceable, write_file_atomic
from hierloc.errors import InputError

FORMAT = FEATURES_FORMAT


@dataclass
class FeatureStore:
    path: Path
    manifest: dict
    features: np.ndarray  # (rows, dim) memmap
    ids: object  # pyarrow string array (rows,)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def lookup(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """``(float32 features of the ids found, found mask)`` for ``ids`` (any order)."""
        pos = IdIndex(self.ids).lookup(np.asarray(ids, dtype=object))
        ok = pos >= 0
        return read_rows(self.features, pos[ok]).astype(np.float32), ok

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: feature store folder does not exist")
        for name in ("features.npy", "manifest.json"):
            if not (path / name).exists():
                raise InputError(
                    f"{path}: not a feature store ({name} is missing); create one with "
                    "hierloc extract"
                )
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path / 'manifest.json'}: not valid JSON ({e})") from e
        rows = manifest.get("rows")
        features = np.load(path / "features.npy", mmap_mode="r")
        if features.ndim != 2 or not isinstance(rows, int) or rows > features.shape[0]:
            raise InputError(
                f"{path}: manifest rows={rows!r} does not fit features.npy of shape "
                f"{features.shape}; the store is damaged"
            )
        if (path / "ids.parquet").exists():
            ids = pq.read_table(path / "ids.parquet", columns=["id"])["id"].combine_chunks()
        else:
            parts = [
                pq.read_table(path / p, columns=["id"])["id"] for p in manifest.get("parts", [])
            ]
            ids = pa.chunked_array([c for t in parts for c in t.chunks], type=pa.string())
            ids = ids.combine_chunks()
        if len(ids) < rows:
            raise InputError(f"{path}: ids.parquet has {len(ids)} ids for {rows} rows")
        return cls(path=path, manifest=manifest, features=features[:rows], ids=ids[:rows])


def read_rows(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``features[rows]`` read in ascending row order (sequential on a memory map), returned
    in the order of ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), features.shape[1]), dtype=features.dtype)
    out[order] = features[rows[order]]
    return out


def write_feature_store(
    path: str | Path,
    ids: np.ndarray,
    features: np.ndarray,
    encoder: str | dict = "unknown",
    dtype: str = "float16",
) -> FeatureStore:
    """Write a complete store in one go (tests, benchmarks, features computed elsewhere)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != len(ids):
        raise ValueError(f"features {features.shape} do not match {len(ids)} ids")
    mm = np.lib.format.open_memmap(
        path / "features.npy", mode="w+", dtype=np.dtype(dtype), shape=features.shape
    )
    mm[:] = features
    mm.flush()
    del mm
    pq.write_table(pa.table({"id": pa.array(ids, type=pa.string())}), path / "ids.parquet")
    manifest = {
        "format": FORMAT,
        "version": 1,
        "encoder": encoder,
        "dim": int(features.shape[1]),
        "dtype": str(np.dtype(dtype)),
        "rows": int(len(ids)),
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return FeatureStore.open(path)


def _write_json_atomic(path: Path, obj: dict) -> None:
    write_file_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


class FeatureStoreWriter:
    """Resumable writer (see the module doc for the commit protocol).

    Args:
        path: the store folder.
        n_items: number of input images (rows allocated).
        dim: feature dimension.
        encoder: the encoder's description (name, version, preprocessing) for the manifest.
        fingerprint: identifies the inputs + encoder; a store made for other ones is refused.
        overwrite: start afresh even if the folder holds a store.
        dtype: of the rows (float16 features; uint8 for semantic maps, see
            :mod:`hierloc.data.semantic`).
    """

    def __init__(
        self,
        path: str | Path,
        n_items: int,
        dim: int,
        encoder: dict,
        fingerprint: str,
        overwrite: bool = False,
        dtype: str = "float16",
    ) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if overwrite and self.path.exists():
            check_store_output(self.path, overwrite)
            shutil.rmtree(self.path)
        if manifest_path.exists():
            m = json.loads(manifest_path.read_text())
            if m.get("fingerprint") != fingerprint or m.get("dim") != dim:
                raise InputError(
                    f"{self.path}: holds a feature store for other inputs or another encoder "
                    f"({m.get('encoder', {}).get('name')}, {m.get('items_total')} images); "
                    "choose another --output, or pass --overwrite to start afresh"
                )
            self.manifest = m
            self.features = np.load(self.path / "features.npy", mmap_mode="r+")
            self._drop_stale_parts()
        else:
            if self.path.exists() and any(self.path.iterdir()):
                raise InputError(
                    f"{self.path}: exists and is not a feature store; choose another --output"
                )
            (self.path / "ids").mkdir(parents=True, exist_ok=True)
            (self.path / "rejects").mkdir(exist_ok=True)
            self.features = np.lib.format.open_memmap(
                self.path / "features.npy", mode="w+", dtype=np.dtype(dtype), shape=(n_items, dim)
            )
            self.manifest = {
                "format": FORMAT,
                "version": 1,
                "encoder": encoder,
                "dim": dim,
                "dtype": str(np.dtype(dtype)),
                "rows": 0,
                "items_total": n_items,
                "items_done": 0,
                "rejected": 0,
                "parts": [],
                "reject_parts": [],
                "complete": False,
                "fingerprint": fingerprint,
            }
            _write_json_atomic(manifest_path, self.manifest)

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def items_done(self) -> int:
        return int(self.manifest["items_done"])

    @property
    def complete(self) -> bool:
        return bool(self.manifest["complete"])

    def _drop_stale_parts(self) -> None:
        """Remove files a killed run wrote after its last manifest."""
        listed = set(self.manifest["parts"]) | set(self.manifest["reject_parts"])
        for sub in ("ids", "rejects"):
            for f in (self.path / sub).glob("*"):
                if f"{sub}/{f.name}" not in listed:
                    f.unlink()

    def commit(
        self,
        features: np.ndarray,
        ids: list[str],
        items: list[int],
        rejects: list[tuple[int, str, str]],
        items_done: int,
    ) -> None:
        """Append accepted rows (+ their item indices) and rejects, and advance ``items_done``."""
        start, m = self.rows, len(ids)
        seq = len(self.manifest["parts"]) + len(self.manifest["reject_parts"])
        if m:
            self.features[start : start + m] = features
            self.features.flush()
            name = f"ids/part-{seq:06d}.parquet"
            with atomic_path(self.path / name) as tmp:
                table = {"id": pa.array(ids, pa.string()), "item": pa.array(items, pa.int64())}
                pq.write_table(pa.table(table), tmp)
            self.manifest["parts"].append(name)
        if rejects:
            name = f"rejects/part-{seq:06d}.csv"
            with atomic_path(self.path / name) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(rejects)
            self.manifest["reject_parts"].append(name)
        self.manifest["rows"] = start + m
        self.manifest["rejected"] += len(rejects)
        self.manifest["items_done"] = items_done
        _write_json_atomic(self.path / "manifest.json", self.manifest)

    def finish(self) -> dict:
        """Merge the parts into ``ids.parquet`` and ``rejects.csv``; mark complete."""
        tables = [pq.read_table(self.path / p) for p in self.manifest["parts"]]
        ids = (
            pa.concat_tables(tables)
            if tables
            else pa.table({"id": pa.array([], pa.string()), "item": pa.array([], pa.int64())})
        )
        with atomic_path(self.path / "ids.parquet") as tmp:
            pq.write_table(ids, tmp)
        with open(self.path / "rejects.csv", "w", newline="") as out:
            w = csv.writer(out)
            w.writerow(["item", "id", "reason"])
            for p in self.manifest["reject_parts"]:
                with open(self.path / p, newline="") as f:
                    w.writerows(csv.reader(f))
        self.manifest["complete"] = True
        _write_json_atomic(self.path / "manifest.json", self.manifest)
        return self.manifest


def check_store_output(out: str | Path, overwrite: bool, inputs=()) -> None:
    """A store is written (or resumed) at ``out``: never one of ``inputs`` or a folder holding
    one, and ``--overwrite`` deletes only a store (or an empty folder), never other files."""
    check_not_input(out, inputs)
    if overwrite:
        check_replaceable(out, overwrite, (FORMAT,))
