"""Searching the entity hierarchy (HierLoc §4.1.2, A.8): beam search, flat per-level search and
the FAISS flat-index variant, vectorised over a batch of queries.

An :class:`EntityIndex` holds, per level (coarse → fine), the entity points (ambient manifold
coordinates) and, between consecutive levels, the parent → children lists as CSR arrays
(``ptr[ℓ]`` of length ``E_ℓ + 1`` into ``child[ℓ]``, the ids of level ``ℓ+1``).

Scores: an entity's score is ``−D(z, h)`` with ``D`` the (squared, as trained by default)
manifold distance; a path's score is the sum over its levels. Within the search, distances come
from one inner product of the manifold's search vectors (Lorentz: the query's time sign
flipped, ``<z, h>_L = −K·cosh(d/R)``) in float32; the final ``k`` paths are re-scored exactly in
float64 with the stable distance of :mod:`hierloc.geometry` and re-sorted.

Shapes: ``B`` queries, ``k`` beam width, ``L`` levels, ``D`` ambient dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hierloc.geometry import Manifold

NEG_INF = float("-inf")


@dataclass
class EntityIndex:
    """Entity points per level and the children lists between levels.

    Attributes:
        manifold: the manifold the points live on.
        points: ``[(E_ℓ, D)]`` per level (float32 or float16 storage; computed in float32).
        ptr, child: CSR children of level ``ℓ`` → ids at level ``ℓ+1``, for ``ℓ < L−1``.
        squared: scores use squared distances (the training default).
    """

    manifold: Manifold
    points: list[torch.Tensor]
    ptr: list[torch.Tensor]
    child: list[torch.Tensor]
    squared: bool = True

    def __post_init__(self) -> None:
        L = len(self.points)
        if len(self.ptr) != L - 1 or len(self.child) != L - 1:
            raise ValueError(f"{L} levels need {L - 1} children lists")
        for lv in range(L - 1):
            E, ptr = len(self.points[lv]), self.ptr[lv]
            if len(ptr) != E + 1 or int(ptr[-1]) != len(self.child[lv]):
                raise ValueError(f"level {lv}: ptr must have {E + 1} entries ending at "
                                 f"{len(self.child[lv])}")  # fmt: skip
        self._ptr_np = [p.numpy() for p in self.ptr]
        self._child_np = [c.numpy() for c in self.child]
        self._vectors = [
            self.manifold.search_vectors(p.float(), "database").contiguous() for p in self.points
        ]

    @classmethod
    def from_parents(cls, manifold: Manifold, points: list[torch.Tensor],
                     parents: list[np.ndarray], squared: bool = True) -> EntityIndex:  # fmt: skip
        """From each level's parent ids (``parents[ℓ]`` for level ``ℓ+1``, ids into level ``ℓ``)."""
        ptrs, childs = [], []
        for lv, par in enumerate(parents):
            par = np.asarray(par, dtype=np.int64)
            E = len(points[lv])
            if len(par) != len(points[lv + 1]) or (len(par) and (par.min() < 0 or par.max() >= E)):
                raise ValueError(f"level {lv + 1}: parent ids must index the {E} entities above")
            order = np.argsort(par, kind="stable")
            ptr = np.zeros(E + 1, dtype=np.int64)
            np.cumsum(np.bincount(par, minlength=E), out=ptr[1:])
            ptrs.append(torch.from_numpy(ptr))
            childs.append(torch.from_numpy(order))
        return cls(manifold, points, ptrs, childs, squared)

    @property
    def levels(self) -> int:
        return len(self.points)

    def nbytes(self) -> int:
        """Storage of the index: points and children lists."""
        tensors = [*self.points, *self.ptr, *self.child]
        return sum(t.numel() * t.element_size() for t in tensors)

    # -- scores -------------------------------------------------------------------------
    def _queries(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = z.float()
        extra = (z * z).sum(-1) if self.manifold.name == "euclidean" else None
        return self.manifold.search_vectors(z, "query").contiguous(), extra

    def _scores(self, ip: torch.Tensor, qn2: torch.Tensor | None) -> torch.Tensor:
        """Search-vector inner products → ``−D`` (float32, in place where possible)."""
        name, K = self.manifold.name, self.manifold.K
        R = math.sqrt(K)
        if name == "lorentz":  # ip = −K·cosh(d/R)
            x = ip.mul_(-1.0 / K).clamp_(min=1.0)
            d = torch.log(x + torch.sqrt(x * x - 1)).mul_(R)
        elif name == "sphere":  # ip = cos(d/R)
            d = torch.acos(ip.clamp_(-1.0, 1.0)).mul_(R)
        else:  # ip = (|q|² − |q−y|²)/2
            d2 = ip.mul_(-2).add_(qn2).clamp_(min=0)
            return d2.neg_() if self.squared else d2.sqrt_().neg_()
        return d.mul_(d).neg_() if self.squared else d.neg_()

    def exact_scores(self, z: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """``(B, k)`` float64 path scores of ``paths (B, k, L')`` (``−1`` ids give ``−inf``),
        every level in one distance call."""
        safe = paths.clamp(min=0)
        h = torch.stack([self.points[lv][safe[:, :, lv]] for lv in range(paths.shape[2])], 2)
        h = h.double()  # (B, k, L', D)
        d = self.manifold.dist(z.double()[:, None, None, :].expand_as(h), h, squared=self.squared)
        return (-d.sum(2)).masked_fill(paths.min(dim=2).values < 0, NEG_INF)

    # -- FAISS (optional dependency) ----------------------------------------------------
    def faiss_vectors(self, lv: int) -> np.ndarray:
        return np.ascontiguousarray(self._vectors[lv].numpy(), dtype=np.float32)

    def faiss_level(self, lv: int):
        """An ``IndexFlatIP`` over level ``lv``'s search vectors (built once; flat indexes are
        the only exact ones for Lorentz vectors, papers.md)."""
        cache = self.__dict__.setdefault("_faiss", {})
        if lv not in cache:
            try:
                import faiss
            except ImportError as e:
                raise ImportError("the FAISS variant needs faiss-cpu: pip install faiss-cpu") from e
            vec = self.faiss_vectors(lv)
            flat = faiss.IndexFlatIP(vec.shape[1])
            flat.add(vec)
            cache[lv] = flat
        return cache[lv]


@dataclass
class SearchResult:
    """Per query, the top paths: ``paths (B, k, L)`` entity ids (``−1``: none), ``scores (B, k)``
    float64, best first."""

    paths: torch.Tensor
    scores: torch.Tensor


def _rerank(index: EntityIndex, z: torch.Tensor, paths: torch.Tensor) -> SearchResult:
    scores = index.exact_scores(z, paths)
    order = scores.argsort(dim=1, descending=True, stable=True)
    paths = paths.gather(1, order[:, :, None].expand_as(paths))
    return SearchResult(paths, scores.gather(1, order))


def _faiss_children_ip(q: np.ndarray, vectors: np.ndarray, ids: torch.Tensor) -> torch.Tensor:
    """FAISS's ``fvec_inner_products_by_idx``: ``(B, M)`` inner products of each query with the
    database vectors ``ids (B, M)`` (``−1`` padding gives 0, masked by the caller)."""
    import faiss

    B, M = ids.shape
    out = np.empty((B, M), dtype=np.float32)
    sub = np.ascontiguousarray(ids.clamp(min=0).numpy(), dtype=np.int64)
    ptr = faiss.swig_ptr
    faiss.fvec_inner_products_by_idx(ptr(out), ptr(q), ptr(vectors), ptr(sub), q.shape[1], B, M)
    return torch.from_numpy(out)


@torch.no_grad()
def beam_search(
    index: EntityIndex, z: torch.Tensor, width: int = 10, backend: str = "torch"
) -> SearchResult:
    """Beam search: the ``width`` best countries, then at each deeper level only the children
    of the beam are scored (gathered through the CSR lists), path scores accumulated, the best
    ``width`` paths kept. Vectorised over the batch; no loop over queries or entities.

    Args:
        z: ``(B, D)`` query points on the index's manifold.
        backend: ``"torch"`` (gathered row-wise inner products) or ``"faiss"`` (the paper's
            variant: an ``IndexFlatIP`` for the top level, FAISS inner products by id for the
            children of the beam).
    Returns:
        the final beam re-scored in float64, best first (``paths (B, k, L)``).
    """
    if width < 1:
        raise ValueError(f"beam width must be >= 1, got {width}")
    if backend not in ("torch", "faiss"):
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")
    q, qn2 = index._queries(z)
    B = q.shape[0]
    k0 = min(width, len(index.points[0]))
    if backend == "faiss":
        qn = q.numpy()
        ip0, ids = index.faiss_level(0).search(qn, k0)
        score = index._scores(torch.from_numpy(ip0), None if qn2 is None else qn2[:, None])
        ids = torch.from_numpy(ids)
    else:
        sc = index._scores(q @ index._vectors[0].T, None if qn2 is None else qn2[:, None])
        score, ids = sc.topk(k0, dim=1)
    paths = ids[:, :, None]
    for lv in range(1, index.levels):
        # bookkeeping in NumPy (small integer arrays; far less per-call overhead than torch)
        k = ids.shape[1]
        ptr, child = index._ptr_np[lv - 1], index._child_np[lv - 1]
        safe = ids.clamp(min=0).numpy()
        start = ptr[safe].ravel()
        alive = (score > NEG_INF).numpy().ravel()
        count = np.where(alive, ptr[safe + 1].ravel() - start, 0)  # children per beam slot
        slot = np.repeat(np.arange(B * k), count)  # (N,) in query order
        n = len(slot)
        first = np.cumsum(count) - count
        cids = child[start[slot] + np.arange(n) - first[slot]]
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
            ip = _faiss_children_ip(qn, index.faiss_vectors(lv), pad_ids)
            pad = index._scores(ip, None if qn2 is None else qn2[:, None])
            pad += score.gather(1, pad_slot)
            pad.masked_fill_(pad_ids < 0, NEG_INF)
        else:
            cids_t, qi_t = torch.from_numpy(cids), torch.from_numpy(qi)
            ip = torch.einsum("nd,nd->n", index._vectors[lv][cids_t], q[qi_t])
            extra = None if qn2 is None else qn2[qi_t]
            cand = score.flatten()[torch.from_numpy(slot)] + index._scores(ip, extra)
            pad = torch.full((B, m), NEG_INF)
            pad[qi_t, torch.from_numpy(pos)] = cand
        score, j = pad.topk(min(width, m), dim=1)
        parent = pad_slot.gather(1, j)
        ids = torch.where(score > NEG_INF, pad_ids.gather(1, j), -1)
        prev = paths.gather(1, parent[:, :, None].expand(-1, -1, lv))
        paths = torch.cat([prev, ids[:, :, None]], 2)
    return _rerank(index, z, paths)


@torch.no_grad()
def flat_search(
    index: EntityIndex, z: torch.Tensor, k: int = 1, chunk: int = 256
) -> list[SearchResult]:
    """Per level, the ``k`` nearest entities among **all** of the level's (Table 8's "no
    hierarchy"), queries in chunks of ``chunk`` (bounded memory). Returns one result per level
    with ``paths (B, k, 1)`` and float32 scores."""
    q, qn2 = index._queries(z)
    out = []
    for vec in index._vectors:
        kk = min(k, len(vec))
        ids, scores = [], []
        for s in range(0, len(q), chunk):
            extra = None if qn2 is None else qn2[s : s + chunk, None]
            v, i = index._scores(q[s : s + chunk] @ vec.T, extra).topk(kk, dim=1)
            ids.append(i)
            scores.append(v)
        out.append(SearchResult(torch.cat(ids)[:, :, None], torch.cat(scores).double()))
    return out
