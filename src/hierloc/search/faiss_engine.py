"""The paper's FAISS variant of the search (A.8): an ``IndexFlatIP`` per level over the
search vectors and FAISS's inner products by id for the children of a beam, in float32."""

from __future__ import annotations

import numpy as np
import torch

from hierloc.errors import missing_dependency
from hierloc.search.index import EntityIndex


def level_index(index: EntityIndex, lv: int):
    """An ``IndexFlatIP`` over level ``lv``'s search vectors (built once per index; flat
    indexes are the only exact ones for Lorentz vectors, papers.md)."""
    cache = index.__dict__.setdefault("_faiss", {})
    if lv not in cache:
        vec = level_vectors(index, lv)
        flat = _faiss().IndexFlatIP(vec.shape[1])
        flat.add(vec)
        cache[lv] = flat
    return cache[lv]


def level_vectors(index: EntityIndex, lv: int) -> np.ndarray:
    """Level ``lv``'s search vectors in float32 (FAISS's precision, as the paper's)."""
    cache = index.__dict__.setdefault("_faiss_vec", {})
    if lv not in cache:
        cache[lv] = np.ascontiguousarray(index.vectors(lv, numpy=True), dtype=np.float32)
    return cache[lv]


def _faiss():
    try:  # an optional dependency, imported only when this engine is asked for
        import faiss
    except ImportError as e:
        raise missing_dependency(e.name, "the FAISS search engine") from e
    return faiss


def children_ip(q: np.ndarray, vectors: np.ndarray, ids: torch.Tensor) -> torch.Tensor:
    """FAISS's ``fvec_inner_products_by_idx``: ``(B, M)`` inner products of each query with the
    database vectors ``ids (B, M)`` (``−1`` padding gives 0, masked by the caller)."""
    faiss = _faiss()
    B, M = ids.shape
    out = np.empty((B, M), dtype=np.float32)
    sub = np.ascontiguousarray(ids.clamp(min=0).numpy(), dtype=np.int64)
    ptr = faiss.swig_ptr
    faiss.fvec_inner_products_by_idx(ptr(out), ptr(q), ptr(vectors), ptr(sub), q.shape[1], B, M)
    return torch.from_numpy(out)
