"""Beam search over the entity hierarchy (HierLoc §4.1.2, A.8): the ``width`` best countries,
then at each deeper level only the children of the beam — compiled (:mod:`kernels`: float32
scores with rigorous bounds, exact float64 scores where a bound cannot decide), or the paper's
FAISS variant (float32 throughout); the final beam scored exactly."""

from __future__ import annotations

import threading

import numpy as np
import torch

from hierloc.search.faiss_engine import children_ip, level_index, level_vectors
from hierloc.search.index import NEG_INF, EntityIndex, SearchResult, rerank

SERIAL_BELOW = 16  # batches smaller than this run on the calling thread


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


def beam_compiled(index: EntityIndex, z: torch.Tensor, width: int, depth: int | None = None):
    """The compiled beam search (:mod:`hierloc.search.kernels`) over the first ``depth``
    levels: ``(paths (B, k, depth), scores (B, k) float64, stats (B, depth, 2))`` — per query
    and level, the candidates scored and those scored exactly."""
    import hierloc.search.kernels as kernels  # numba (~0.4 s): imported when a search first runs

    depth = index.levels if depth is None else depth
    q, qn2 = index.queries(z)
    q64 = q.numpy()
    B = len(q64)
    pk = index.packed()
    paths = np.full((B, width, depth), -1, dtype=np.int64)
    scores = np.full((B, width), NEG_INF)
    n_out = np.zeros(B, dtype=np.int64)
    stats = np.zeros((B, depth, 2), dtype=np.int64)
    names = "v32", "vnorm", "v64", "perm", "off", "ptr", "ptr_off", "norms", "radii"
    arrays = (*(pk[n] for n in names), index.max_candidates(width), paths, scores, n_out, stats)
    args = (
        np.ascontiguousarray(q64, dtype=np.float32),
        q64,
        np.linalg.norm(q64, axis=1),
        np.zeros(B) if qn2 is None else np.ascontiguousarray(qn2.numpy()),
        width,
        depth,
        index.manifold.search_form,
        float(index.manifold.K),
        index.squared,
        kernels.error_constant(q64.shape[1]),
        arrays,
    )
    # numba's thread pool from the main thread only (its fallback layer, workqueue, aborts on
    # concurrent launches, e.g. from a server's worker threads)
    if B < SERIAL_BELOW or threading.current_thread() is not threading.main_thread():
        kernels.beam_serial(*args)
    else:
        kernels.beam_parallel(min(B, 8 * kernels.nb.get_num_threads()), *args)
    k = max(1, int(n_out.max()))
    return torch.from_numpy(paths[:, :k]), torch.from_numpy(scores[:, :k]), stats


@torch.no_grad()
def beam_search(
    index: EntityIndex, z: torch.Tensor, width: int = 10, backend: str = "compiled"
) -> SearchResult:
    """Beam search: the ``width`` best countries, then at each deeper level only the children
    of the beam are scored (gathered through the CSR lists), path scores accumulated, the best
    ``width`` paths kept. Vectorised over the batch; no loop over queries or entities.

    Args:
        z: ``(B, D)`` query points on the index's manifold.
        backend: ``"compiled"`` (the exact search compiled with numba, :func:`beam_compiled`)
            or ``"faiss"`` (the paper's variant: an ``IndexFlatIP`` for the top
            level, FAISS inner products by id for the children of the beam, float32 pruning).
    Returns:
        the final beam re-scored in float64, best first (``paths (B, k, L)``).
    """
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    if backend not in ("compiled", "faiss"):
        raise ValueError(f"backend must be 'compiled' or 'faiss', got {backend!r}")
    B = z.shape[0]
    if B == 0:
        return SearchResult(
            torch.zeros(0, width, index.levels, dtype=torch.long),
            torch.zeros(0, width, dtype=torch.float64),
        )
    if backend == "compiled":
        paths, scores, _ = beam_compiled(index, z, width)
        return SearchResult(paths, scores)  # the kernel's scores are the exact ones
    q, qn2 = index.queries(z)
    k0 = min(width, len(index.points[0]))
    qn = np.ascontiguousarray(q.numpy(), dtype=np.float32)
    ip0, ids = level_index(index, 0).search(qn, k0)
    score = index.scores(torch.from_numpy(ip0), None if qn2 is None else qn2[:, None])
    ids = torch.from_numpy(ids)
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
        ip = children_ip(qn, level_vectors(index, lv), pad_ids)
        pad = index.scores(ip, None if qn2 is None else qn2[:, None])
        pad += score.gather(1, pad_slot)
        pad.masked_fill_(pad_ids < 0, NEG_INF)
        score, j = pad.topk(min(width, m), dim=1)
        parent = pad_slot.gather(1, j)
        ids = torch.where(score > NEG_INF, pad_ids.gather(1, j), -1)
        prev = paths.gather(1, parent[:, :, None].expand(-1, -1, lv))
        paths = torch.cat([prev, ids[:, :, None]], 2)
    return rerank(index, z, paths)
