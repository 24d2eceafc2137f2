"""The entity hierarchy — HierLoc Algorithm 1 as one streaming O(N) pass.

Per record: ISO2 country, sanitised region / subregion / city tokens (missing levels become the
placeholder ``_``, see :mod:`hierloc.hierarchy.names`), four entity ids. Per entity: count,
coordinate sum on the unit sphere, and — with a feature store — the sum of image embeddings.
Finalised: mean coordinates (the normalised mean of unit vectors, so entities spanning the
antimeridian get a sensible centre; if the vectors cancel, the first record's location), mean
image embedding, optional text embedding of the name.

Exactness and determinism: coordinates are summed as int64 fixed-point (unit-vector
components × 2^32, ~1.5 mm on Earth), and float16 embeddings in float64, which is exact for
realistic magnitudes — so the sums, and the output files, do not depend on the chunk size.
Entities are sorted by (level, id) at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hierloc.geo.countries import country_name
from hierloc.geo.gazetteer import unit_xyz, xyz_to_latlon
from hierloc.hierarchy.names import PLACEHOLDER, SEPARATOR, display_name, sanitize

log = logging.getLogger(__name__)

LEVEL_NAMES = ("country", "region", "subregion", "city")
LABEL_FOR_LEVEL = {"region": "region", "subregion": "sub-region", "city": "city"}
FIXED_POINT = float(2**32)


EMB_BLOCK = 1 << 15


def add_rows_by_group(out: np.ndarray, groups: np.ndarray, values: np.ndarray) -> None:
    """``out[g] += values[i]`` for every row ``i`` with ``groups[i] == g``, in float64.

    ``out`` ``(E, D)`` float64 (C-contiguous, updated in place), ``groups`` ``(n,)`` int64,
    ``values`` ``(n, D)``. torch's ``index_add_`` converts float16 → float64 about 7× faster
    than NumPy; float16 values summed in float64 are exact, so the order does not matter.
    """
    torch.from_numpy(out).index_add_(
        0,
        torch.from_numpy(np.ascontiguousarray(groups, dtype=np.int64)),
        torch.from_numpy(np.ascontiguousarray(values)).to(torch.float64),
    )


class _Grow:
    """A NumPy array with amortised appends along axis 0."""

    def __init__(self, dtype, width: int | None = None) -> None:
        shape = (1024,) if width is None else (1024, width)
        self.data = np.zeros(shape, dtype=dtype)
        self.n = 0

    def ensure(self, n: int) -> None:
        if n > len(self.data):
            new = np.zeros((max(n, 2 * len(self.data)), *self.data.shape[1:]), self.data.dtype)
            new[: self.n] = self.data[: self.n]
            self.data = new
        self.n = max(self.n, n)

    def view(self) -> np.ndarray:
        return self.data[: self.n]


class _Level:
    """Accumulators of one level; entity index = order of first appearance."""

    def __init__(self, dim: int | None) -> None:
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.parents: list[str | None] = []
        self.names: list[str] = []
        self.count = _Grow(np.int64)
        self.xyz = _Grow(np.int64, 3)
        self.first_xyz = _Grow(np.float64, 3)
        self.dim = dim
        if dim:
            self.emb = _Grow(np.float64, dim)
            self.emb_count = _Grow(np.int64)

    def add(self, keys, parents, names, xyz, emb, has_emb) -> np.ndarray:
        """Accumulate one chunk; returns the entity index of each row ``(n,)``."""
        codes, uniques = pd.factorize(keys)
        _, first = np.unique(codes, return_index=True)
        gidx_u = np.empty(len(uniques), dtype=np.int64)
        for u, (key, row) in enumerate(zip(uniques, first, strict=True)):
            g = self.index.get(key)
            if g is None:
                g = self.index[key] = len(self.ids)
                self.ids.append(key)
                self.parents.append(None if parents is None else parents[row])
                self.names.append(names[row])
                self.first_xyz.ensure(g + 1)
                self.first_xyz.data[g] = xyz[row]
            gidx_u[u] = g
        gidx = gidx_u[codes]
        E = len(self.ids)
        self.count.ensure(E)
        self.count.data[:E] += np.bincount(gidx, minlength=E)
        fixed = np.rint(xyz * FIXED_POINT)  # exact integers in float64
        self.xyz.ensure(E)
        for k in range(3):  # per-chunk sums < 2^53: exact, then int64
            self.xyz.data[:E, k] += np.bincount(gidx, weights=fixed[:, k], minlength=E).astype(
                np.int64
            )
        if self.dim and emb is not None and has_emb.any():
            rows = np.flatnonzero(has_emb)
            g = gidx[rows]
            self.emb.ensure(E)
            self.emb_count.ensure(E)
            self.emb_count.data[:E] += np.bincount(g, minlength=E)
            for start in range(0, len(rows), EMB_BLOCK):  # bounded float64 temporaries
                block = slice(start, start + EMB_BLOCK)
                add_rows_by_group(self.emb.data, g[block], emb[rows[block]])
        return gidx


@dataclass
class Hierarchy:
    """A finished hierarchy.

    Attributes:
        entities: ``entity_id, level, level_name, parent_id, name, latitude, longitude,
            count, image_count`` sorted by (level, entity_id).
        image_mean: ``(E, D)`` float32 mean image embedding per entity row, or ``None``.
        text: ``(E, Dt)`` float32 text embedding per entity row, or ``None``.
    """

    entities: pd.DataFrame
    image_mean: np.ndarray | None = None
    text: np.ndarray | None = None


class HierarchyBuilder:
    """Streaming accumulation of the entity tree (see module doc).

    Args:
        embed_dim: image-embedding dimension when a feature store is used, else ``None``.
    """

    def __init__(self, embed_dim: int | None = None) -> None:
        self.embed_dim = embed_dim
        # image embeddings are summed per city only; coarser sums are the sums of their
        # children's (exact), computed once in finalize — a quarter of the work per record
        self.levels = [
            _Level(embed_dim if d == len(LEVEL_NAMES) - 1 else None)
            for d in range(len(LEVEL_NAMES))
        ]
        self._token_cache: dict[str, tuple[str | None, str | None]] = {}

    def _tokens(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tokens, display names)`` per row, each distinct value sanitised once."""
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        tok = np.empty(len(uniques) + 1, dtype=object)
        disp = np.empty(len(uniques) + 1, dtype=object)
        for i, u in enumerate(uniques):
            cached = self._token_cache.get(u)
            if cached is None:
                cached = self._token_cache[u] = (sanitize(u), display_name(u))
            tok[i], disp[i] = cached
        tok[-1] = disp[-1] = None
        return tok[codes], disp[codes]

    def add(
        self,
        iso2: np.ndarray,
        labels: dict[str, np.ndarray | None],
        lat: np.ndarray,
        lon: np.ndarray,
        embeddings: np.ndarray | None = None,
        has_embedding: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Add records (all with a valid ISO2) and return their four entity ids per level.

        Args:
            iso2: ``(n,)`` ISO2 codes.
            labels: ``region``, ``sub-region``, ``city`` → ``(n,)`` names (or ``None``).
            lat, lon: ``(n,)`` degrees.
            embeddings: ``(n, D)`` image embeddings (rows without one are ignored).
            has_embedding: ``(n,)`` bool, which rows have an embedding.
        """
        n = len(iso2)
        xyz = unit_xyz(lat, lon)
        if embeddings is not None and has_embedding is None:
            has_embedding = np.ones(n, dtype=bool)
        key = np.asarray(iso2, dtype=object)
        parent_key = None
        codes, uniq = pd.factorize(key)
        parent_name = np.array([country_name(c) for c in uniq], dtype=object)[codes]
        out = {}
        for depth, level in enumerate(LEVEL_NAMES):
            if depth == 0:
                names = parent_name
            else:
                values = labels.get(LABEL_FOR_LEVEL[level])
                if values is None:
                    values = np.full(n, None, dtype=object)
                tok, disp = self._tokens(values)
                missing = pd.isna(tok)
                tok = np.where(missing, PLACEHOLDER, tok)
                names = np.where(missing, parent_name, disp)  # a placeholder: parent's name
                key = key + SEPARATOR + tok
            gidx = self.levels[depth].add(key, parent_key, names, xyz, embeddings, has_embedding)
            out[level] = np.asarray(self.levels[depth].ids, dtype=object)[gidx]
            parent_key, parent_name = key, names
        return out

    def _embedding_sums(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(sums (E, D), image counts (E,))`` per level, in first-appearance order."""
        city = self.levels[-1]
        E = len(city.ids)
        sums = city.emb.view()[:E] if city.emb.n else np.zeros((E, self.embed_dim))
        counts = city.emb_count.view()[:E] if city.emb_count.n else np.zeros(E, np.int64)
        out = [(sums, counts)]
        for depth in range(len(self.levels) - 2, -1, -1):
            child, parent = self.levels[depth + 1], self.levels[depth]
            pidx = np.array([parent.index[p] for p in child.parents], dtype=np.int64)
            psums = np.zeros((len(parent.ids), self.embed_dim))
            for start in range(0, len(pidx), EMB_BLOCK):
                block = slice(start, start + EMB_BLOCK)
                add_rows_by_group(psums, pidx[block], sums[block])
            counts = np.bincount(pidx, weights=counts, minlength=len(parent.ids)).astype(np.int64)
            sums = psums
            out.append((sums, counts))
        return out[::-1]

    def finalize(self, text_encoder: Callable[[list[str]], np.ndarray] | None = None) -> Hierarchy:
        frames, means = [], []
        emb_sums = self._embedding_sums() if self.embed_dim else None
        for depth, lv in enumerate(self.levels):
            E = len(lv.ids)
            ids = np.asarray(lv.ids, dtype=object)
            order = np.argsort(ids, kind="stable")  # deterministic (level, id) order
            count = lv.count.view()[:E]
            xyz = lv.xyz.view()[:E].astype(np.float64) / FIXED_POINT
            norm = np.linalg.norm(xyz, axis=1)
            degenerate = norm < 1e-9 * np.maximum(count, 1)
            xyz[degenerate] = lv.first_xyz.view()[:E][degenerate]
            lat, lon = xyz_to_latlon(xyz)
            frame = pd.DataFrame(
                {
                    "entity_id": ids,
                    "level": np.full(E, depth, dtype=np.int8),
                    "level_name": LEVEL_NAMES[depth],
                    "parent_id": np.asarray(lv.parents, dtype=object),
                    "name": np.asarray(lv.names, dtype=object),
                    "latitude": lat,
                    "longitude": lon,
                    "count": count,
                }
            )
            if emb_sums is not None:
                sums, emb_count = emb_sums[depth]
                frame["image_count"] = emb_count
                mean = sums / np.maximum(emb_count, 1)[:, None]
                means.append(mean[order].astype(np.float32))
            frames.append(frame.iloc[order])
        entities = pd.concat(frames, ignore_index=True)
        image_mean = np.concatenate(means) if means else None
        text = None
        if text_encoder is not None:
            log.info(
                "embedding %d entity descriptions with %s",
                len(entities),
                getattr(text_encoder, "name", "the text encoder"),
            )
            text = np.asarray(text_encoder(describe(entities)), dtype=np.float32)
            if text.ndim != 2 or len(text) != len(entities):
                raise ValueError(
                    f"text encoder returned shape {text.shape} for {len(entities)} names"
                )
        return Hierarchy(entities=entities, image_mean=image_mean, text=text)


def describe(entities: pd.DataFrame) -> list[str]:
    """Text for each entity: its name and its ancestors', innermost first, consecutive
    repeats removed — ``"Brooklyn, Kings County, New York, United States"``."""
    name_of = dict(zip(entities["entity_id"], entities["name"], strict=True))
    parent_of = dict(zip(entities["entity_id"], entities["parent_id"], strict=True))
    out = []
    for eid in entities["entity_id"]:
        parts: list[str] = []
        node = eid
        while node is not None:
            name = name_of[node]
            if not parts or parts[-1] != name:
                parts.append(name)
            node = parent_of[node]
        out.append(", ".join(parts))
    return out
