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

from hierloc.search.beam import beam_search
from hierloc.search.flat import flat_search
from hierloc.search.index import NEG_INF, EntityIndex, SearchResult, csr_children, rerank

__all__ = [
    "NEG_INF",
    "EntityIndex",
    "SearchResult",
    "beam_search",
    "csr_children",
    "flat_search",
    "rerank",
]
