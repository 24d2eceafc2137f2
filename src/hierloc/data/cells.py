"""``hierloc cells build``: metadata → GeoSURGE's nested S2 partitions (a folder).

Output folder:

* ``cells.parquet`` — one row per cell of every partition: ``partition`` (0 = coarsest),
  ``tau_max``, ``row`` (row within its partition), ``cell_id`` (uint64 S2 id), ``token``,
  ``level``, ``count``, ``center_lat/lon`` (geometric centre), ``mean_lat/lon`` (mean of its
  samples on the sphere — GeoSURGE's cell location), ``parent_row`` (row of the containing
  cell in the previous partition, -1 for partition 0);
* ``assignments.parquet`` — per accepted record, in file order: ``id`` and ``p0 … p{P-1}``,
  the row of its cell in each partition (-1 when its cell was dropped for having fewer than
  ``tau_min`` samples);
* ``manifest.json`` (thresholds, counts; no timestamps), ``rejects.csv`` if rows were rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from hierloc.data.artifacts import read_parquet
from hierloc.data.metadata import MetadataReader, Rejects
from hierloc.data.writers import staged_folder
from hierloc.errors import InputError
from hierloc.geo import s2
from hierloc.geo.gazetteer import unit_xyz
from hierloc.geo.s2cells import PAPER_TAU_MAX, PAPER_TAU_MIN, Partition, build_partitions

FORMAT = "hierloc-cells"
VERSION = 1


def build_cells(
    metadata: str | Path,
    out: str | Path,
    columns: dict[str, str] | None = None,
    tau_max: tuple[int, ...] = PAPER_TAU_MAX,
    tau_min: int = PAPER_TAU_MIN,
    strict: bool = False,
    overwrite: bool = False,
    chunk_rows: int = 500_000,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """Read coordinates, build the partitions, write the folder; returns the manifest."""
    taus = list(tau_max)
    if not taus or any(t < 1 for t in taus) or taus != sorted(set(taus), reverse=True):
        raise InputError(
            f"--tau-max {','.join(map(str, taus))}: give thresholds ≥ 1, strictly "
            "decreasing from coarse to fine (e.g. 25000,10000,5000)"
        )
    if tau_min < 0:
        raise InputError(f"--tau-min {tau_min}: give a count ≥ 0")
    out = Path(out)
    with staged_folder(out, overwrite, (FORMAT,), inputs=[metadata]) as tmp:
        rejects = Rejects(tmp / "rejects.csv")
        reader = MetadataReader(
            metadata, columns=columns, strict=strict, rejects=rejects, chunk_rows=chunk_rows
        )
        lats, lons, ids = [], [], []
        for chunk in reader:
            lats.append(chunk.lat)
            lons.append(chunk.lon)
            ids.append(pa.array(chunk.ids, type=pa.string()))
            if progress is not None:
                progress(reader.rows_read)
        rejects.close()
        lat, lon = np.concatenate(lats), np.concatenate(lons)
        if not len(lat):
            why = "; ".join(f"{n} × {k}" for k, n in rejects.counts.most_common(3))
            raise InputError(
                f"{metadata}: no usable rows, {sum(rejects.counts.values())} rejected "
                f"({why or 'the file has no rows'}); the cells need coordinates"
            )
        partitions, assignment = build_partitions(lat, lon, tau_max=tuple(tau_max), tau_min=tau_min)
        empty = [part.tau_max for part in partitions if not len(part)]
        if empty:
            raise InputError(
                f"--tau-min {tau_min}: no cell of the partitions with --tau-max "
                f"{','.join(map(str, empty))} keeps {tau_min} of the {len(lat):,} records; "
                "lower --tau-min"
            )
        tables = []
        for p, part in enumerate(partitions):
            tables.append(
                pa.table(
                    {
                        "partition": pa.array(np.full(len(part), p, np.int8)),
                        "tau_max": pa.array(np.full(len(part), part.tau_max, np.int64)),
                        "row": pa.array(np.arange(len(part), dtype=np.int64)),
                        "cell_id": pa.array(part.ids, type=pa.uint64()),
                        "token": pa.array(s2.token(part.ids), type=pa.string()),
                        "level": pa.array(part.levels.astype(np.int8)),
                        "count": pa.array(part.counts.astype(np.int64)),
                        "center_lat": part.center_lat,
                        "center_lon": part.center_lon,
                        "mean_lat": part.mean_lat,
                        "mean_lon": part.mean_lon,
                        "parent_row": pa.array(part.parent.astype(np.int64)),
                    }
                )
            )
        pq.write_table(pa.concat_tables(tables), tmp / "cells.parquet")
        assign = {"id": pa.chunked_array(ids, type=pa.string())}
        assign |= {f"p{p}": pa.array(assignment[:, p]) for p in range(len(partitions))}
        pq.write_table(pa.table(assign), tmp / "assignments.parquet")
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "metadata": Path(metadata).name,
            "tau_max": list(tau_max),
            "tau_min": tau_min,
            "cells": [len(p) for p in partitions],
            "levels": [[int(p.levels.min()), int(p.levels.max())] for p in partitions],
            "samples_in_a_cell": [
                int((assignment[:, k] >= 0).sum()) for k in range(len(partitions))
            ],
            **reader.summary(),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if not rejects.total:
            (tmp / "rejects.csv").unlink(missing_ok=True)
    return manifest


def partitions(frame: pd.DataFrame) -> list:
    """A cells frame (``cells.parquet``) as the builder's :class:`~hierloc.geo.s2cells.Partition`
    objects, coarse → fine (rows are sorted by cell id, as the builder wrote them)."""
    out = []
    for p in sorted(frame["partition"].unique()):
        sub = frame[frame["partition"] == p].sort_values("row")
        out.append(
            Partition(
                tau_max=int(sub["tau_max"].iloc[0]),
                ids=sub["cell_id"].to_numpy(np.uint64),
                levels=sub["level"].to_numpy(np.int64),
                counts=sub["count"].to_numpy(np.int64),
                center_lat=sub["center_lat"].to_numpy(),
                center_lon=sub["center_lon"].to_numpy(),
                mean_lat=sub["mean_lat"].to_numpy(),
                mean_lon=sub["mean_lon"].to_numpy(),
                parent=sub["parent_row"].to_numpy(np.int64),
            )
        )
    return out


def load_cells(cells: str | Path) -> tuple[pd.DataFrame, list]:
    """``(cells frame, partitions)`` of a cells folder (``hierloc cells build``)."""
    path = Path(cells)
    if not (path / "cells.parquet").exists():
        raise InputError(
            f"{path}: not a cells folder (no cells.parquet); make one with "
            "hierloc cells build TRAIN_METADATA -o FOLDER"
        )
    frame = read_parquet(
        path / "cells.parquet",
        "cells table",
        "make it again with hierloc cells build TRAIN_METADATA -o FOLDER",
    )
    return frame, partitions(frame)


def locate_cells(parts: list, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(N, P)``: the row of the cell holding each point in every partition, ``-1`` if none."""
    leaf = s2.leaf_cells(unit_xyz(np.asarray(lat, np.float64), np.asarray(lon, np.float64)))[0]
    return np.stack([part.locate(leaf) for part in parts], 1).astype(np.int64)
