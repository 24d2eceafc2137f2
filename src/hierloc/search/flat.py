"""Flat per-level search (Table 8's "no hierarchy"): each level's nearest entities among all of
the level's, independently."""

from __future__ import annotations

import torch

from hierloc.search.index import EntityIndex, SearchResult


@torch.no_grad()
def flat_search(
    index: EntityIndex, z: torch.Tensor, k: int = 1, chunk: int = 256
) -> list[SearchResult]:
    """Per level, the ``k`` nearest entities among **all** of the level's (Table 8's "no
    hierarchy"), queries in chunks of ``chunk`` (bounded memory). Returns one result per level
    with ``paths (B, k, 1)`` and float32 scores."""
    q, qn2 = index.queries(z)
    out = []
    for lv in range(index.levels):
        vec = index.vectors(lv)
        kk = min(k, len(vec))
        ids, scores = [], []
        for s in range(0, len(q), chunk):
            extra = None if qn2 is None else qn2[s : s + chunk, None]
            v, i = index.scores(q[s : s + chunk] @ vec.T, extra).topk(kk, dim=1)
            ids.append(i)
            scores.append(v)
        out.append(SearchResult(torch.cat(ids)[:, :, None], torch.cat(scores).double()))
    return out
