"""The sphere of radius ``R = sqrt(K)`` in ``R^{d+1}`` (curvature ``+1/K``), for Table 6.

Points ``x = (x0, x⃗)`` with ``|x| = R``; origin ``o = (R, 0, …, 0)``; tangent vectors at ``o``
are given by their space part ``v ∈ R^d``. Default ``K = 1`` (the unit sphere).

Cap: ``expmap0`` is periodic, so ``logmap0(expmap0(v)) == v`` holds only for ``|v| ≤ r_max`` (just
below ``π·R``, the antipode). Above it ``expmap0`` raises
:class:`~hierloc.errors.ManifoldOverflowError` by default, or rescales to ``r_max`` with
``overflow="clip"``.

Distances use the chord form ``d = 2R·asin(|x−y| / 2R)`` (exact 0 at ``x == y``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hierloc.geometry._common import (
    angle_tile,
    cap_norm,
    full_precision,
    safe_norm,
    series_or,
    sqrt0,
    upcast,
)

NAME = "sphere"
DEFAULT_K = 1.0
# the compiled search's score form (hierloc.search.kernels): the inner
# product is ``cos(d/R)``; exact scores from the chord of the difference
SEARCH_FORM = 2


def _radius(K: float) -> float:
    if not K > 0:
        raise ValueError(f"sphere K (radius squared) must be > 0, got {K}")
    return math.sqrt(K)


def r_max(K: float = DEFAULT_K, dtype: torch.dtype = torch.float32) -> float:
    """Largest tangent norm for which the round trip is the identity: just below ``π·R``.

    The margin (``16·eps`` of ``dtype``) keeps ``sin(|v|/R)`` positive after rounding, so the
    direction of ``v`` survives even at the cap.
    """
    eps = torch.finfo(dtype if dtype == torch.float64 else torch.float32).eps
    return (math.pi - 16 * eps) * _radius(K)


def origin(d: int, K: float = DEFAULT_K, dtype=torch.float32, device=None) -> torch.Tensor:
    o = torch.zeros(d + 1, dtype=dtype, device=device)
    o[0] = _radius(K)
    return o


def project(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    """Scale ``x`` onto the sphere, ``(..., d+1)``."""
    x = upcast(x)
    with full_precision(x):
        return _radius(K) * x / safe_norm(x)


def expmap0(v: torch.Tensor, K: float = DEFAULT_K, overflow: str = "raise") -> torch.Tensor:
    """``(R cos(|v|/R), R sin(|v|/R) v/|v|)``; ``(..., d) -> (..., d+1)``."""
    R = _radius(K)
    v = upcast(v)
    with full_precision(v):
        n = safe_norm(v)
        v, n = cap_norm(v, n, r_max(K, v.dtype), overflow, NAME)
        t = n / R
        sinc = series_or(t, 1e-2, lambda s: 1 - s * s / 6 + s**4 / 120, lambda s: torch.sin(s) / s)
        return torch.cat([R * torch.cos(t), sinc * v], dim=-1)


def logmap0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    """``(..., d+1) -> (..., d)``; the antipode of ``o`` maps to a vector of norm ``π·R``."""
    R = _radius(K)
    x = upcast(x)
    with full_precision(x):
        space = x[..., 1:]
        z = safe_norm(space) / R  # sin of the angle
        angle = torch.atan2(z, x[..., :1] / R)
        near_o = (x[..., :1] > 0) & (z < 1e-2)
        zs = torch.where(near_o, z, torch.zeros_like(z))
        ratio = torch.where(
            near_o,
            1 + zs * zs / 6 + 3 * zs**4 / 40,  # asin(z)/z
            angle / torch.where(near_o, torch.ones_like(z), z),
        )
        return ratio * space


def dist0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    R = _radius(K)
    x = upcast(x)
    with full_precision(x):
        space = x[..., 1:]
        return R * torch.atan2(sqrt0((space * space).sum(-1)), x[..., 0])


def _dist_from_chord_sq(c: torch.Tensor, R: float, squared: bool) -> torch.Tensor:
    d = 2 * R * torch.asin(torch.clamp(sqrt0(c) / (2 * R), max=1.0))
    return d * d if squared else d


def dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """Great-circle distance, broadcast ``(..., d+1) -> (...)``."""
    R = _radius(K)
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        return _dist_from_chord_sq(((x - y) ** 2).sum(-1), R, squared)


def pairwise_dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """``(B, d+1), (E, d+1) -> (B, E)`` with one matmul (chord² = 2K − 2 x·y)."""
    R = _radius(K)
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        return _dist_from_chord_sq(2 * K - 2 * (x @ y.T), R, squared)


def search_vectors(x: torch.Tensor, role: str) -> torch.Tensor:
    """Unit vectors for both roles: the inner product is ``cos(d/R)``, decreasing in ``d``."""
    if role not in ("query", "database"):
        raise ValueError(f"role must be 'query' or 'database', got {role!r}")
    x = upcast(x)
    return x / safe_norm(x)


def search_extra(q: torch.Tensor) -> None:
    """The per-query term :func:`neg_dist_from_ip` needs besides the inner product: none."""
    return None


def neg_dist_from_ip(ip, K: float, squared: bool, extra=None):
    """``−D`` from search-vector inner products ``ip = cos(d/R)`` (torch or NumPy)."""
    xp = np if isinstance(ip, np.ndarray) else torch
    d = xp.arccos(xp.clip(ip, -1.0, 1.0)) * math.sqrt(K)
    return -(d * d) if squared else -d


# -- the fused loss's tile (hierloc.losses.fused): q = 2K − 2m, the squared chord ------------
FUSED_SCALED = False  # ∂q/∂m = −2


def fused_operands(x: torch.Tensor, K: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The matmul operand (the point); no per-point scalars."""
    return x, []


def fused_tile(m, rows, cols, K: float, squared: bool, grad: bool):
    """From a tile's matmul ``m`` (overwritten): ``D`` and ``∂D/∂q``."""
    q = m.mul_(-2).add_(2 * K).clamp_(min=0)
    D, dDdq = angle_tile(q, math.sqrt(K), squared, grad, hyperbolic=False)
    return D, dDdq, {}


def fused_scalar_grads(G, extra, rows, cols):
    """No per-point scalars."""
    return [], []
