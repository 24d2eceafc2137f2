"""Beam search over the entity hierarchy (HierLoc §4.1.2, A.8): the ``width`` best countries,
then at each deeper level only the children of the beam, vectorised over a batch (a single
query in NumPy); the final beam re-scored exactly."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from hierloc.search.faiss_engine import children_ip, level_index, level_vectors
from hierloc.search.index import NEG_INF, EntityIndex, SearchResult, rerank


def _expand(
    ptr: np.ndarray, child: np.ndarray, ids: np.ndarray, alive: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The children of entity rows ``ids (n,)`` (none for entries not ``alive``):
    ``(slot, cids, count)`` — per child, its parent's position in ``ids`` and its own row, in
    ``ids`` order; ``count (n,)`` children per entry."""
    start = ptr[ids]
    count = ptr[ids + 1] - start
    if alive is not None:
        count = np.where(alive, count, 0)
    slot = np.repeat(np.arange(len(ids)), count)
    first = np.cumsum(count) - count
    return slot, child[start[slot] + np.arange(len(slot)) - first[slot]], count


def _sampled_inner(
    q: torch.Tensor, vectors: torch.Tensor, per_query: np.ndarray, cids: np.ndarray
) -> torch.Tensor:
    """``q[i]·vectors[c]`` for the candidates ``cids`` of every query (grouped by query,
    ``per_query[i]`` of them), ``(N,)``: one sampled dense-dense matmul (SDDMM) on a CSR
    pattern, which reads each candidate row once instead of gathering rows and queries."""
    if len(per_query) == 1:  # one query: a plain gather and matrix-vector product
        return vectors[torch.from_numpy(cids)] @ q[0]
    crow = np.zeros(len(per_query) + 1, dtype=np.int64)
    np.cumsum(per_query, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            torch.from_numpy(crow),
            torch.from_numpy(cids),
            torch.zeros(len(cids), dtype=q.dtype),
            size=(len(per_query), len(vectors)),
            check_invariants=False,
        )
        out = torch.sparse.sampled_addmm(pattern, q, vectors.T, beta=0.0)
    return out.values()


def _beam_single(index: EntityIndex, q: np.ndarray, qn2: float | None, width: int) -> torch.Tensor:
    """Beam search of one query in NumPy (interactive use: a few µs per operation instead of
    torch's dispatch); the same steps as the batched path. Returns ``paths (1, k, L)``."""
    s = index.scores(index.vectors(0, numpy=True) @ q, qn2)
    k = min(width, len(s))
    ids = np.argpartition(-s, k - 1)[:k]
    score, paths = s[ids], ids[:, None]
    for lv in range(1, index.levels):
        slot, cids, _ = _expand(*index.children(lv - 1), ids)
        cand = score[slot] + index.scores(index.vectors(lv, numpy=True)[cids] @ q, qn2)
        k = min(width, len(cand))
        if k == 0:  # no children (not in hierarchies built from images)
            return torch.full((1, 1, index.levels), -1, dtype=torch.long)
        j = np.argpartition(-cand, k - 1)[:k]
        score, ids = cand[j], cids[j]
        paths = np.concatenate([paths[slot[j]], ids[:, None]], 1)
    return torch.from_numpy(paths[None].astype(np.int64))


@torch.no_grad()
def beam_search(
    index: EntityIndex, z: torch.Tensor, width: int = 10, backend: str = "torch"
) -> SearchResult:
    """Beam search: the ``width`` best countries, then at each deeper level only the children
    of the beam are scored (gathered through the CSR lists), path scores accumulated, the best
    ``width`` paths kept. Vectorised over the batch; no loop over queries or entities.

    Args:
        z: ``(B, D)`` query points on the index's manifold.
        backend: ``"torch"`` (one sampled dense-dense matmul per level; a single query in
            NumPy) or ``"faiss"`` (the paper's
            variant: an ``IndexFlatIP`` for the top level, FAISS inner products by id for the
            children of the beam).
    Returns:
        the final beam re-scored in float64, best first (``paths (B, k, L)``).
    """
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    if backend not in ("torch", "faiss"):
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
    q, qn2 = index.queries(z)
    B = q.shape[0]
    if B == 0:
        return SearchResult(
            torch.zeros(0, width, index.levels, dtype=torch.long),
            torch.zeros(0, width, dtype=torch.float64),
        )
    if B == 1 and backend == "torch":
        extra = None if qn2 is None else float(qn2[0])
        return rerank(index, z, _beam_single(index, q[0].numpy(), extra, width))
    k0 = min(width, len(index.points[0]))
    if backend == "faiss":
        qn = np.ascontiguousarray(q.numpy(), dtype=np.float32)
        ip0, ids = level_index(index, 0).search(qn, k0)
        score = index.scores(torch.from_numpy(ip0), None if qn2 is None else qn2[:, None])
        ids = torch.from_numpy(ids)
    else:
        sc = index.scores(q @ index.vectors(0).T, None if qn2 is None else qn2[:, None])
        score, ids = sc.topk(k0, dim=1)
    paths = ids[:, :, None]
    for lv in range(1, index.levels):
        # bookkeeping in NumPy (small integer arrays; far less per-call overhead than torch)
        k = ids.shape[1]
        slot, cids, count = _expand(
            *index.children(lv - 1),
            ids.clamp(min=0).numpy().ravel(),
            (score > NEG_INF).numpy().ravel(),
        )  # (N,) in query order
        n = len(slot)
        qi = slot // k
        per_query = count.reshape(B, k).sum(1)
        m = max(1, int(per_query.max()))
        pos = np.arange(n) - (np.cumsum(per_query) - per_query)[qi]
        pad_slot = np.zeros((B, m), dtype=np.int64)
        pad_slot[qi, pos] = slot - qi * k
        pad_ids = np.full((B, m), -1, dtype=np.int64)
        pad_ids[qi, pos] = cids
        pad_slot, pad_ids = torch.from_numpy(pad_slot), torch.from_numpy(pad_ids)
        if backend == "faiss":
            ip = children_ip(qn, level_vectors(index, lv), pad_ids)
            pad = index.scores(ip, None if qn2 is None else qn2[:, None])
            pad += score.gather(1, pad_slot)
            pad.masked_fill_(pad_ids < 0, NEG_INF)
        else:
            qi_t = torch.from_numpy(qi)
            ip = _sampled_inner(q, index.vectors(lv), per_query, cids)
            extra = None if qn2 is None else qn2[qi_t]
            cand = score.flatten()[torch.from_numpy(slot)] + index.scores(ip, extra)
            pad = torch.full((B, m), NEG_INF, dtype=cand.dtype)
            pad[qi_t, torch.from_numpy(pos)] = cand
        score, j = pad.topk(min(width, m), dim=1)
        parent = pad_slot.gather(1, j)
        ids = torch.where(score > NEG_INF, pad_ids.gather(1, j), -1)
        prev = paths.gather(1, parent[:, :, None].expand(-1, -1, lv))
        paths = torch.cat([prev, ids[:, :, None]], 2)
    return rerank(index, z, paths)
