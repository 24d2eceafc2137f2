"""GeoSURGE's adaptive S2 partitions (§III-A), vectorised.

From the six cube faces, every cell holding more than ``tau_max`` samples is split into its
four children, recursively; cells with fewer than ``tau_min`` samples are then dropped.
Several ``tau_max`` (coarse → fine; paper: 25000, 10000, 5000, 2000, 1000, 750, 500 with
``tau_min = 50``) give nested partitions: a cell split at a coarse threshold is also split at
every finer one, and a cell dropped at a coarse level has too few samples to survive finer,
so every cell of a finer partition lies inside exactly one cell of each coarser partition.

Counting uses the S2 property that a cell's descendants occupy the contiguous id range
``[range_min, range_max]``: with the samples' leaf ids sorted once, any cell's count is two
binary searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hierloc.geo import s2
from hierloc.geo.gazetteer import unit_xyz, xyz_to_latlon

PAPER_TAU_MAX = (25000, 10000, 5000, 2000, 1000, 750, 500)
PAPER_TAU_MIN = 50


@dataclass
class Partition:
    """One partition: cells sorted by id (hence by range), with per-cell statistics.

    Attributes:
        tau_max: the split threshold.
        ids, levels, counts: ``(C,)`` uint64 / int64 / int64.
        center_lat, center_lon: the cells' geometric centres (degrees).
        mean_lat, mean_lon: the mean of their samples on the sphere (degrees).
        parent: row of the containing cell in the previous (coarser) partition, ``-1`` for
            the first.
    """

    tau_max: int
    ids: np.ndarray
    levels: np.ndarray
    counts: np.ndarray
    center_lat: np.ndarray
    center_lon: np.ndarray
    mean_lat: np.ndarray
    mean_lon: np.ndarray
    parent: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def locate(self, leaf_ids: np.ndarray) -> np.ndarray:
        """Row of the cell containing each leaf id, ``-1`` if none (a dropped cell)."""
        lo = s2.range_min(self.ids, self.levels)
        hi = s2.range_max(self.ids, self.levels)
        pos = np.searchsorted(lo, leaf_ids, side="right") - 1
        ok = pos >= 0
        ok[ok] &= leaf_ids[ok] <= hi[pos[ok]]
        return np.where(ok, pos, -1)


def _counts(sorted_leaves: np.ndarray, ids: np.ndarray, levels: np.ndarray) -> np.ndarray:
    lo = np.searchsorted(sorted_leaves, s2.range_min(ids, levels), side="left")
    hi = np.searchsorted(sorted_leaves, s2.range_max(ids, levels), side="right")
    return hi - lo


def adaptive_cells(
    sorted_leaves: np.ndarray, tau_max: int, tau_min: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, levels, counts)`` of one partition, sorted by id."""
    ids = s2.face_cells()
    levels = np.zeros(6, dtype=np.int64)
    out_ids, out_levels, out_counts = [], [], []
    while len(ids):
        counts = _counts(sorted_leaves, ids, levels)
        split = (counts > tau_max) & (levels < s2.MAX_LEVEL)
        keep = ~split & (counts >= max(tau_min, 1))
        out_ids.append(ids[keep])
        out_levels.append(levels[keep])
        out_counts.append(counts[keep])
        ids = s2.children(ids[split], levels[split]).ravel()
        levels = np.repeat(levels[split] + 1, 4)
    ids = np.concatenate(out_ids)
    order = np.argsort(ids)
    return ids[order], np.concatenate(out_levels)[order], np.concatenate(out_counts)[order]


def build_partitions(
    lat: np.ndarray,
    lon: np.ndarray,
    tau_max: tuple[int, ...] = PAPER_TAU_MAX,
    tau_min: int = PAPER_TAU_MIN,
) -> tuple[list[Partition], np.ndarray]:
    """All partitions for samples at ``(lat, lon)`` degrees.

    Returns:
        ``(partitions, assignment)`` with ``assignment`` ``(N, P)`` int32: the row of each
        sample's cell in each partition, ``-1`` if its cell was dropped.
    """
    tau_max = tuple(int(t) for t in tau_max)
    if list(tau_max) != sorted(tau_max, reverse=True) or len(set(tau_max)) != len(tau_max):
        raise ValueError(f"tau_max must be strictly decreasing (coarse → fine), got {tau_max}")
    if tau_min < 0 or any(t < 1 for t in tau_max):
        raise ValueError("tau_min must be >= 0 and every tau_max >= 1")
    xyz = unit_xyz(lat, lon)
    leaves, face, i, j = s2.leaf_cells(xyz)
    order = np.argsort(leaves)
    sorted_leaves = leaves[order]
    partitions: list[Partition] = []
    assignment = np.full((len(leaves), len(tau_max)), -1, dtype=np.int32)
    for p, t in enumerate(tau_max):
        ids, levels, counts = adaptive_cells(sorted_leaves, t, tau_min)
        center_lat, center_lon = _centres(ids, levels, face, i, j, sorted_leaves, order)
        lo = s2.range_min(ids, levels)
        rows = np.searchsorted(lo, leaves, side="right") - 1
        inside = rows >= 0
        inside[inside] &= leaves[inside] <= s2.range_max(ids, levels)[rows[inside]]
        rows = np.where(inside, rows, -1)
        assignment[:, p] = rows
        mean_lat, mean_lon = _means(xyz, rows, len(ids))
        parent = partitions[-1].locate(ids) if partitions else np.full(len(ids), -1, np.int64)
        partitions.append(
            Partition(t, ids, levels, counts, center_lat, center_lon, mean_lat, mean_lon, parent)
        )
    return partitions, assignment


def _centres(ids, levels, face, i, j, sorted_leaves, order):
    """Geometric centre of each cell, from the (face, i, j) of one of its samples."""
    first = np.searchsorted(sorted_leaves, s2.range_min(ids, levels), side="left")
    sample = order[first]
    size = np.left_shift(1, s2.MAX_LEVEL - levels)
    ci = (i[sample] & ~(size - 1)) + size // 2
    cj = (j[sample] & ~(size - 1)) + size // 2
    u = s2.st_to_uv(ci / s2.LIMIT_IJ)
    v = s2.st_to_uv(cj / s2.LIMIT_IJ)
    return xyz_to_latlon(s2.face_uv_to_xyz(face[sample], u, v))


def _means(xyz, rows, n_cells):
    ok = rows >= 0
    sums = np.column_stack(
        [np.bincount(rows[ok], weights=xyz[ok, k], minlength=n_cells) for k in range(3)]
    )
    return xyz_to_latlon(sums)
