"""Euclidean space ``R^d`` behind the manifold interface, for the Table 6 ablation.

Points and tangent vectors are the same ``(..., d)`` tensors; ``expmap0``/``logmap0`` are the
identity and there is no cap (``r_max = inf``). ``K`` is accepted and ignored.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hierloc.geometry._common import cap_norm, full_precision, safe_norm, sqrt0, upcast

NAME = "euclidean"
DEFAULT_K = 1.0
# the compiled search's score form (hierloc.search.kernels): the inner
# product is ``(|q|² − |q−y|²)/2``; exact scores from the difference
SEARCH_FORM = 1


def r_max(K: float = DEFAULT_K, dtype: torch.dtype = torch.float32) -> float:
    return math.inf


def origin(d: int, K: float = DEFAULT_K, dtype=torch.float32, device=None) -> torch.Tensor:
    return torch.zeros(d, dtype=dtype, device=device)


def project(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    return upcast(x)


def expmap0(v: torch.Tensor, K: float = DEFAULT_K, overflow: str = "raise") -> torch.Tensor:
    v = upcast(v)
    cap_norm(v, safe_norm(v), r_max(K), overflow, NAME)  # validates ``overflow``
    return v


def logmap0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    return upcast(x)


def dist0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    x = upcast(x)
    return sqrt0((x * x).sum(-1))


def dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """``|x − y|``, broadcast ``(..., d) -> (...)``; exact 0 with finite gradient at ``x == y``."""
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        sq = ((x - y) ** 2).sum(-1)
        return sq if squared else sqrt0(sq)


def pairwise_dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """``(B, d), (E, d) -> (B, E)`` via ``|x|² + |y|² − 2 x·y`` (one matmul)."""
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        sq = (x * x).sum(-1, keepdim=True) + (y * y).sum(-1)[None, :] - 2 * (x @ y.T)
        sq = torch.clamp(sq, min=0)
        return sq if squared else sqrt0(sq)


def search_vectors(x: torch.Tensor, role: str) -> torch.Tensor:
    """L2 as inner product: database ``[y, −|y|²/2]``, query ``[q, 1]``.

    ``q·y − |y|²/2 = (|q|² − |q−y|²)/2``: for a fixed query, larger means closer.
    """
    x = upcast(x)
    if role == "database":
        return torch.cat([x, -0.5 * (x * x).sum(-1, keepdim=True)], dim=-1)
    if role == "query":
        return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)
    raise ValueError(f"role must be 'query' or 'database', got {role!r}")


def search_extra(q: torch.Tensor) -> torch.Tensor:
    """``|q|²`` per query: with ``ip = (|q|² − |q−y|²)/2`` it gives the distance back."""
    return (q * q).sum(-1)


def neg_dist_from_ip(ip, K: float, squared: bool, extra=None):
    """``−D`` from search-vector inner products ``ip = (|q|² − |q−y|²)/2`` and ``extra = |q|²``
    (broadcast against ``ip``; torch or NumPy)."""
    xp = np if isinstance(ip, np.ndarray) else torch
    d2 = xp.clip(extra - 2 * ip, 0.0, None)
    return -d2 if squared else -xp.sqrt(d2)


# -- the fused loss's tile (hierloc.losses.fused): q = |x|² + |y|² − 2m = |x − y|² ----------
FUSED_SCALED = False  # ∂q/∂m = −2


def fused_operands(x: torch.Tensor, K: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The matmul operand (the point) and the per-point scalar ``[|x|²]``."""
    return x, [(x * x).sum(-1)]


def fused_tile(m, rows, cols, K: float, squared: bool, grad: bool):
    """From a tile's matmul ``m`` (overwritten): ``D`` and ``∂D/∂q``."""
    q = m.mul_(-2).add_(rows[0][:, None]).add_(cols[0][None, :]).clamp_(min=0)
    if squared:
        return q, None, {}
    root = torch.sqrt(q)
    tiny = torch.finfo(m.dtype).tiny
    dDdq = torch.where(q > 0, 0.5 / root.clamp(min=tiny), 0.0) if grad else None
    return root, dDdq, {}


def fused_scalar_grads(G, extra, rows, cols):
    """``∂q/∂|x|² = ∂q/∂|y|² = 1``."""
    return [G.sum(dim=1)], [G.sum(dim=0)]
