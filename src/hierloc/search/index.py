"""The entity index searched by every engine: per level the entity points and their search
vectors, the parent → children lists (CSR), scores from inner products (the manifold's), and
the exact float64 re-scoring of final paths."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hierloc.geometry import Manifold, lorentz

NEG_INF = float("-inf")


def csr_children(parents: np.ndarray, n_parents: int) -> tuple[np.ndarray, np.ndarray]:
    """Children lists as CSR from the parent row of every child: ``(ptr (n_parents + 1,),
    child (n_children,))``, the children of parent ``p`` being ``child[ptr[p]:ptr[p + 1]]``."""
    parents = np.asarray(parents, dtype=np.int64)
    ptr = np.zeros(n_parents + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=n_parents), out=ptr[1:])
    return ptr, np.argsort(parents, kind="stable").astype(np.int64)


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
                raise ValueError(
                    f"level {lv}: ptr must have {E + 1} entries ending at {len(self.child[lv])}"
                )
        self._ptr_np = [p.numpy() for p in self.ptr]
        self._child_np = [c.numpy() for c in self.child]
        M = self.manifold
        self._vectors = [
            M.search_vectors(M.project(p.double()), "database").contiguous() for p in self.points
        ]
        self._vectors_np = [v.numpy() for v in self._vectors]  # shared memory

    @classmethod
    def from_parents(
        cls,
        manifold: Manifold,
        points: list[torch.Tensor],
        parents: list[np.ndarray],
        squared: bool = True,
    ) -> EntityIndex:
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
    def queries(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Query points → ``(float64 search vectors (B, D'), the manifold's per-query extra)``."""
        z = self.manifold.project(z.double())
        return self.manifold.search_vectors(z, "query").contiguous(), self.manifold.search_extra(z)

    def scores(self, ip, extra=None):
        """Search-vector inner products → ``−D`` (in their dtype; torch tensors or NumPy)."""
        return self.manifold.neg_dist_from_ip(ip, self.squared, extra)

    def vectors(self, lv: int, numpy: bool = False):
        """Level ``lv``'s float64 database search vectors (torch, or the same memory in NumPy)."""
        return self._vectors_np[lv] if numpy else self._vectors[lv]

    def children(self, lv: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ptr, child)`` CSR arrays (NumPy) from level ``lv`` to ``lv + 1``."""
        return self._ptr_np[lv], self._child_np[lv]

    def _lorentz64(self, lv: int, xp):
        """Level ``lv``'s points and their float64 space norms and radii ``asinh(n/R)``
        (computed once), as torch tensors or NumPy arrays."""
        cache = self.__dict__.setdefault("_l64", {})
        if lv not in cache:
            space = self.points[lv][:, 1:].double()
            n = torch.linalg.vector_norm(space, dim=-1).clamp_(min=np.finfo(np.float64).tiny)
            t = torch.asinh(n / math.sqrt(self.manifold.K))
            cache[lv] = {
                torch: (self.points[lv], n, t),
                np: (self.points[lv].numpy(), n.numpy(), t.numpy()),
            }
        return cache[lv][xp]

    def exact_scores(self, z: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """``(B, k)`` float64 path scores of ``paths (B, k, L')`` (``−1`` ids give ``−inf``);
        a single Lorentz query is scored in NumPy (less per-call overhead)."""
        safe = paths.clamp(min=0)
        if self.manifold.name == "lorentz":  # the stable gathered form with cached radii
            if len(paths) == 1:
                d = torch.from_numpy(self._lorentz_path_dist(z.double().numpy(), safe.numpy()))
            else:
                d = self._lorentz_path_dist(z.double(), safe)
            d = d * d if self.squared else d
        else:
            B, k, L = paths.shape
            h = torch.stack([self.points[lv][safe[:, :, lv]] for lv in range(L)], 2).double()
            d = self.manifold.dist(
                z.double()[:, None, None, :].expand_as(h), h, squared=self.squared
            )
        return (-d.sum(2)).masked_fill(paths.min(dim=2).values < 0, NEG_INF)

    def _lorentz_path_dist(self, z, paths):
        """Float64 Lorentz distances ``(B, k, L)`` from queries ``z (B, D)`` to the entities of
        ``paths (B, k, L)`` (torch or NumPy, ids ≥ 0), level by level through
        :func:`hierloc.geometry.lorentz.gathered_dist` with the entities' norms and radii
        computed once."""
        xp = np if isinstance(z, np.ndarray) else torch
        B, k, L = paths.shape
        out = []
        for lv in range(L):
            ids = paths[:, :, lv]
            pts, norms, radii = self._lorentz64(lv, xp)
            hs = pts[ids.reshape(-1)][:, 1:].reshape(B, k, -1)
            hs = hs.astype(np.float64) if xp is np else hs.double()
            out.append(lorentz.gathered_dist(z, hs, norms[ids], radii[ids], self.manifold.K))
        return xp.stack(out, -1) if xp is np else torch.stack(out, -1)


@dataclass
class SearchResult:
    """Per query, the top paths: ``paths (B, k, L)`` entity ids (``−1``: none), ``scores (B, k)``
    float64, best first."""

    paths: torch.Tensor
    scores: torch.Tensor


def rerank(index: EntityIndex, z: torch.Tensor, paths: torch.Tensor) -> SearchResult:
    """``paths (B, k, L)`` re-scored exactly (float64, :meth:`EntityIndex.exact_scores`) and
    re-sorted, best first."""
    scores = index.exact_scores(z, paths)
    order = scores.argsort(dim=1, descending=True, stable=True)
    paths = paths.gather(1, order[:, :, None].expand_as(paths))
    return SearchResult(paths, scores.gather(1, order))
