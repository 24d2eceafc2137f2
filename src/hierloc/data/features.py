"""The feature store (DESIGN.md): a folder with ``features.npy`` (float16, N×D, memory-mapped),
``ids.parquet`` (row → id) and ``manifest.json`` (encoder, dim, dtype, rows committed, …).

Only the first ``manifest["rows"]`` rows are committed; readers never see more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hierloc.errors import InputError

FORMAT = "hierloc-features"


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

    @classmethod
    def open(cls, path: str | Path) -> FeatureStore:
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.is_dir():
            raise InputError(f"{path}: feature store folder does not exist")
        for name in ("features.npy", "ids.parquet", "manifest.json"):
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
        ids = pq.read_table(path / "ids.parquet", columns=["id"])["id"].combine_chunks()
        if len(ids) < rows:
            raise InputError(f"{path}: ids.parquet has {len(ids)} ids for {rows} rows")
        return cls(path=path, manifest=manifest, features=features[:rows], ids=ids[:rows])


def write_feature_store(
    path: str | Path, ids: np.ndarray, features: np.ndarray, encoder: str = "unknown"
) -> FeatureStore:
    """Write a complete store in one go (tests, benchmarks, features computed elsewhere)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    features = np.asarray(features)
    if features.ndim != 2 or len(features) != len(ids):
        raise ValueError(f"features {features.shape} do not match {len(ids)} ids")
    mm = np.lib.format.open_memmap(
        path / "features.npy", mode="w+", dtype=np.float16, shape=features.shape
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
        "dtype": "float16",
        "rows": int(len(ids)),
    }
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return FeatureStore.open(path)
