"""Searching the entity hierarchy (HierLoc §4.1.2, A.8): beam search, flat per-level search and
the FAISS flat-index variant, vectorised over a batch of queries.

An :class:`EntityIndex` holds, per level (coarse → fine), the entity points (ambient manifold
coordinates) and, between consecutive levels, the parent → children lists as CSR arrays
(``ptr[ℓ]`` of length ``E_ℓ + 1`` into ``child[ℓ]``, the ids of level ``ℓ+1``).

Scores: an entity's score is ``−D(z, h)`` with ``D`` the (squared, as trained by default)
manifold distance; a path's score is the sum over its levels. Within the search, distances come
from one inner product of the manifold's search vectors (Lorentz: the query's time sign
flipped, ``<z, h>_L = −K·cosh(d/R)``) in **float64**, the points put back on the manifold in
float64 first (Lorentz: ``x0`` recomputed from the space part): far from the origin the float32
form cancels (at tangent norm 6, errors of 0.03 in d² between entities 1e-4 apart), and a
pruned prefix is never recovered. The final ``k`` paths are re-scored with the stable float64
distance of :mod:`hierloc.geometry` and re-sorted. The FAISS variant scores in float32 (FAISS's
own precision), as the paper's.

Shapes: ``B`` queries, ``k`` beam width, ``L`` levels, ``D`` ambient dims.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hierloc.geometry import Manifold

NEG_INF = float("-inf")


def csr_children(parents: np.ndarray, n_parents: int) -> tuple[np.ndarray, np.ndarray]:
    """Children lists as CSR from the parent row of every child: ``(ptr (n_parents + 1,),
    child (n_children,))``, the children of parent ``p`` being ``child[ptr[p]:ptr[p + 1]]``."""
    parents = np.asarray(parents, dtype=np.int64)
    ptr = np.zeros(n_parents + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n_parents), out=ptr[1:])
    return ptr, np.argsort(parents, kind="stable").astype(np.int64)


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
        M = self.manifold
        self._vectors = [
            M.search_vectors(M.project(p.double()), "database").contiguous() for p in self.points
        ]
        self._vectors_np = [v.numpy() for v in self._vectors]  # shared memory

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
            ptr, child = csr_children(par, E)
            ptrs.append(torch.from_numpy(ptr))
            childs.append(torch.from_numpy(child))
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
        z = self.manifold.project(z.double())
        extra = (z * z).sum(-1) if self.manifold.name == "euclidean" else None
        return self.manifold.search_vectors(z, "query").contiguous(), extra

    def _scores(self, ip, qn2):
        """Search-vector inner products → ``−D`` (in their dtype; torch tensors or NumPy)."""
        xp = np if isinstance(ip, np.ndarray) else torch
        name, K = self.manifold.name, self.manifold.K
        R = math.sqrt(K)
        if name == "lorentz":  # ip = −K·cosh(d/R); acosh as a log (vectorised on CPU)
            x = xp.clip(ip * (-1.0 / K), 1.0, None)
            d = xp.log(x + xp.sqrt(x * x - 1)) * R
        elif name == "sphere":  # ip = cos(d/R)
            d = xp.arccos(xp.clip(ip, -1.0, 1.0)) * R
        else:  # ip = (|q|² − |q−y|²)/2
            d2 = xp.clip(qn2 - 2 * ip, 0.0, None)
            return -d2 if self.squared else -xp.sqrt(d2)
        return -(d * d) if self.squared else -d

    def _lorentz64(self, lv: int, xp):
        """Level ``lv``'s points and their float64 space norms and radii ``asinh(n/R)``
        (computed once), as torch tensors or NumPy arrays."""
        cache = self.__dict__.setdefault("_l64", {})
        if lv not in cache:
            space = self.points[lv][:, 1:].double()
            n = torch.linalg.vector_norm(space, dim=-1).clamp_(min=np.finfo(np.float64).tiny)
            t = torch.asinh(n / math.sqrt(self.manifold.K))
            cache[lv] = {torch: (self.points[lv], n, t),
                         np: (self.points[lv].numpy(), n.numpy(), t.numpy())}  # fmt: skip
        return cache[lv][xp]

    def exact_scores(self, z: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """``(B, k)`` float64 path scores of ``paths (B, k, L')`` (``−1`` ids give ``−inf``);
        a single Lorentz query is scored in NumPy (less per-call overhead)."""
        safe = paths.clamp(min=0)
        if self.manifold.name == "lorentz":
            if len(paths) == 1:
                d = torch.from_numpy(_lorentz_path_dist(self, z.double().numpy(), safe.numpy()))
            else:
                d = _lorentz_path_dist(self, z.double(), safe)
            d = d * d if self.squared else d
        else:
            B, k, L = paths.shape
            h = torch.stack([self.points[lv][safe[:, :, lv]] for lv in range(L)], 2).double()
            d = self.manifold.dist(z.double()[:, None, None, :].expand_as(h), h,
                                   squared=self.squared)  # fmt: skip
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


def _lorentz_path_dist(index: EntityIndex, z, paths):
    """Float64 Lorentz distances ``(B, k, L)`` from queries ``z (B, D)`` to the entities of
    ``paths (B, k, L)`` (torch tensors or NumPy arrays, ids ≥ 0): the stable polar form of
    :func:`hierloc.geometry.lorentz.dist` (``|x−y|_L² = 4K·sinh²((s−t)/2) + |x⃗||y⃗|·|x̂−ŷ|²``)
    with the entities' norms and radii precomputed in float64, the query's computed once, and
    ``|x̂−ŷ|² = 2 − 2·x̂·ŷ`` from one contraction per level; pairs closer than 1e-3 in
    direction get the difference form (no cancellation)."""
    xp = np if isinstance(z, np.ndarray) else torch
    K = index.manifold.K
    R = math.sqrt(K)
    tiny = np.finfo(np.float64).tiny
    B, k, L = paths.shape
    zs = z[:, 1:]
    nz = xp.sqrt(xp.clip((zs * zs).sum(-1), tiny, None))  # (B,)
    uz = zs / nz[:, None]
    sz = xp.arcsinh(nz / R)[:, None]
    out = []
    for lv in range(L):
        ids = paths[:, :, lv]
        pts, norms, radii = index._lorentz64(lv, xp)
        hs = pts[ids.reshape(-1)][:, 1:].reshape(B, k, -1)
        hs = hs.astype(np.float64) if xp is np else hs.double()
        nh, th = norms[ids], radii[ids]  # (B, k)
        chord2 = xp.clip(2 - 2 * xp.einsum("bkd,bd->bk", hs, uz) / nh, 0.0, None)
        close = chord2 < 1e-6
        if close.any():  # exact where 2 − 2cos would cancel
            i, j = xp.where(close)
            diff = uz[i] - hs[i, j] / nh[i, j][:, None]
            chord2[i, j] = (diff * diff).sum(-1)
        q = 4 * K * xp.sinh((sz - th) / 2) ** 2 + nz[:, None] * nh * chord2
        out.append(2 * R * xp.arcsinh(xp.sqrt(q) / (2 * R)))
    return xp.stack(out, -1) if xp is np else torch.stack(out, -1)


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


def _sampled_inner(q: torch.Tensor, vectors: torch.Tensor, per_query: np.ndarray,
                   cids: np.ndarray) -> torch.Tensor:  # fmt: skip
    """``q[i]·vectors[c]`` for the candidates ``cids`` of every query (grouped by query,
    ``per_query[i]`` of them), ``(N,)``: one sampled dense-dense matmul (SDDMM) on a CSR
    pattern, which reads each candidate row once instead of gathering rows and queries."""
    import warnings

    if len(per_query) == 1:  # one query: a plain gather and matrix-vector product
        return vectors[torch.from_numpy(cids)] @ q[0]
    crow = np.zeros(len(per_query) + 1, dtype=np.int64)
    np.cumsum(per_query, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            torch.from_numpy(crow), torch.from_numpy(cids), torch.zeros(len(cids), dtype=q.dtype),
            size=(len(per_query), len(vectors)), check_invariants=False,
        )  # fmt: skip
        out = torch.sparse.sampled_addmm(pattern, q, vectors.T, beta=0.0)
    return out.values()


def _beam_single(index: EntityIndex, q: np.ndarray, qn2: float | None,
                 width: int) -> torch.Tensor:  # fmt: skip
    """Beam search of one query in NumPy (interactive use: a few µs per operation instead of
    torch's dispatch); the same steps as the batched path. Returns ``paths (1, k, L)``."""
    s = index._scores(index._vectors_np[0] @ q, qn2)
    k = min(width, len(s))
    ids = np.argpartition(-s, k - 1)[:k]
    score, paths = s[ids], ids[:, None]
    for lv in range(1, index.levels):
        slot, cids, _ = _expand(index._ptr_np[lv - 1], index._child_np[lv - 1], ids)
        cand = score[slot] + index._scores(index._vectors_np[lv][cids] @ q, qn2)
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
    q, qn2 = index._queries(z)
    B = q.shape[0]
    if B == 0:
        return SearchResult(torch.zeros(0, width, index.levels, dtype=torch.long),
                            torch.zeros(0, width, dtype=torch.float64))  # fmt: skip
    if B == 1 and backend == "torch":
        extra = None if qn2 is None else float(qn2[0])
        return _rerank(index, z, _beam_single(index, q[0].numpy(), extra, width))
    k0 = min(width, len(index.points[0]))
    if backend == "faiss":
        qn = np.ascontiguousarray(q.numpy(), dtype=np.float32)
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
        slot, cids, count = _expand(
            index._ptr_np[lv - 1],
            index._child_np[lv - 1],
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
            ip = _faiss_children_ip(qn, index.faiss_vectors(lv), pad_ids)
            pad = index._scores(ip, None if qn2 is None else qn2[:, None])
            pad += score.gather(1, pad_slot)
            pad.masked_fill_(pad_ids < 0, NEG_INF)
        else:
            qi_t = torch.from_numpy(qi)
            ip = _sampled_inner(q, index._vectors[lv], per_query, cids)
            extra = None if qn2 is None else qn2[qi_t]
            cand = score.flatten()[torch.from_numpy(slot)] + index._scores(ip, extra)
            pad = torch.full((B, m), NEG_INF, dtype=cand.dtype)
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
