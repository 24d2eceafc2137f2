"""The entity index searched by every engine: per level the entity points and their search
vectors, the parent → children lists (CSR), scores from inner products (the manifold's), and
the exact float64 re-scoring of final paths."""

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
        sizes = [len(p) for p in self.points]
        self._off = np.zeros(L + 1, dtype=np.int64)
        np.cumsum(sizes, out=self._off[1:])
        # every level's float64 search vectors in one array (the kernels index it by offset);
        # the per-level tensors and arrays are views of it
        self._v64 = torch.cat(
            [M.search_vectors(M.project(p.double()), "database") for p in self.points]
        ).contiguous()
        self._vectors = [self._v64[a:b] for a, b in zip(self._off[:-1], self._off[1:], strict=True)]
        self._vectors_np = [v.numpy() for v in self._vectors]

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

    def packed(self) -> dict:
        """The arrays the compiled beam search reads (:mod:`hierloc.search.kernels`; built
        once): ``off`` level offsets into the concatenated rows; ``perm`` each
        level's entity ids in children order (level 0 as is), ``v32``/``vnorm`` the float32
        vectors and their float64 norms in that order, so that a parent's children are one
        slice; ``v64``, ``norms``, ``radii`` the float64 vectors, space norms and radii
        ``asinh(|h⃗|/R)`` (Lorentz) in id order; ``ptr``/``ptr_off`` the children lists with a
        virtual root above level 0; ``top_sums`` per level the running sum of the child counts,
        largest first (see :meth:`max_candidates`)."""
        pk = self.__dict__.get("_packed")
        if pk is None:
            v64 = self._v64.numpy()
            E0 = len(self.points[0])
            perm = np.concatenate([np.arange(E0), *self._child_np])
            rows = perm + np.repeat(self._off[:-1], np.diff(self._off))
            ptrs = [np.array([0, E0], dtype=np.int64), *self._ptr_np]
            norms = np.maximum(np.linalg.norm(v64[:, 1:], axis=1), np.finfo(np.float64).tiny)
            pk = self.__dict__["_packed"] = {
                "off": self._off,
                "perm": perm,
                "v32": np.ascontiguousarray(v64[rows], dtype=np.float32),
                "vnorm": np.linalg.norm(v64, axis=1)[rows],
                "v64": v64,
                "norms": norms,
                "radii": np.arcsinh(norms / math.sqrt(self.manifold.K)),
                "ptr": np.concatenate(ptrs),
                "ptr_off": np.cumsum([0] + [len(p) for p in ptrs[:-1]]).astype(np.int64),
                "top_sums": [np.cumsum(-np.sort(-np.diff(p))) for p in ptrs],
            }
        return pk

    def max_candidates(self, width: int) -> int:
        """The most candidates a beam of ``width`` can have at one level (its ``width`` parents
        with the most children)."""
        return max(1, max(int(t[min(width, len(t)) - 1]) for t in self.packed()["top_sums"]))

    def exact_scores(self, z: torch.Tensor, paths: torch.Tensor) -> torch.Tensor:
        """``(B, k)`` float64 path scores of ``paths (B, k, L')`` (``−1`` ids give ``−inf``),
        each distance in its manifold's stable form (:func:`kernels.path_dist`, compiled)."""
        import hierloc.search.kernels as kernels  # numba: imported when a search first runs

        safe = paths.clamp(min=0)
        pk = self.packed()
        q = np.ascontiguousarray(self.queries(z)[0].numpy())
        args = pk["v64"], pk["off"], pk["norms"], pk["radii"], self.manifold.search_form
        d = kernels.path_dist(q, safe.numpy(), *args, float(self.manifold.K))
        d = torch.from_numpy(d * d if self.squared else d)
        return (-d.sum(2)).masked_fill(paths.min(dim=2).values < 0, NEG_INF)


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
