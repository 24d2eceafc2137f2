"""Lorentz (hyperboloid) model of hyperbolic space, as pure tensor functions.

Convention (HierLoc §3.1, A.2; DESIGN.md): a point is ``x = (x0, x⃗) ∈ R^{d+1}`` with time
coordinate first, ``<x, y>_L = -x0·y0 + x⃗·y⃗`` and ``<x, x>_L = -K``. The radius is
``R = sqrt(K)``, the sectional curvature ``-1/K`` (``K`` is geoopt's ``k``); the origin is
``o = (R, 0, …, 0)``. Tangent vectors at ``o`` have time component 0 and are passed as their
space part ``v ∈ R^d``. Default ``K = 0.8`` (paper Table 11).

Numerics (STYLE.md): everything is computed in float32 or float64 (half inputs are upcast,
autocast disabled). No function uses ``arcosh(-<x,y>_L/K)``, which loses all precision on
close pairs; instead

* ``logmap0`` uses only the space part: ``v = asinh(|x⃗|/R)/(|x⃗|/R) · x⃗``;
* ``dist`` uses ``d = 2R·asinh(|x−y|_L / 2R)`` with the Minkowski norm of the difference
  written as a sum of two non-negative terms (no cancellation, exactly 0 at ``x == y``):
  ``|x−y|_L² = 4K·sinh²((s−t)/2) + |x⃗||y⃗|·|x̂ − ŷ|²`` where ``s = asinh(|x⃗|/R)``,
  ``t = asinh(|y⃗|/R)`` and ``x̂, ŷ`` are the unit space directions.

Cap: ``expmap0`` accepts tangent norms up to ``r_max = T_MAX[dtype]·R`` (``T_MAX`` = 40 in
float32, 300 in float64: the largest radii whose squared coordinates stay finite in pairwise
products). Above the cap it raises :class:`~hierloc.errors.ManifoldOverflowError` by default,
or rescales the vector to ``r_max`` with ``overflow="clip"``; it never clamps silently.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hierloc.geometry._common import (
    angle_tile,
    asinhc,
    cap_norm,
    full_precision,
    safe_norm,
    sinhc,
    sqrt0,
    upcast,
)

NAME = "lorentz"
DEFAULT_K = 0.8
# the compiled search's score form (hierloc.search.kernels): the inner
# product is ``−K·cosh(d/R)``; exact scores in the stable polar form
SEARCH_FORM = 0
T_MAX = {torch.float32: 40.0, torch.float64: 300.0}


def _radius(K: float) -> float:
    if not K > 0:
        raise ValueError(f"Lorentz K must be > 0, got {K}")
    return math.sqrt(K)


def r_max(K: float = DEFAULT_K, dtype: torch.dtype = torch.float32) -> float:
    """Largest tangent norm ``expmap0`` accepts for ``dtype`` (half dtypes compute in float32)."""
    return T_MAX.get(dtype, T_MAX[torch.float32]) * _radius(K)


def origin(d: int, K: float = DEFAULT_K, dtype=torch.float32, device=None) -> torch.Tensor:
    """The origin ``o = (R, 0, …, 0)``, shape ``(d+1,)``."""
    o = torch.zeros(d + 1, dtype=dtype, device=device)
    o[0] = _radius(K)
    return o


def inner(x: torch.Tensor, y: torch.Tensor, keepdim: bool = False) -> torch.Tensor:
    """Lorentz inner product ``<x, y>_L``; ``(..., d+1), (..., d+1) -> (...)``."""
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        xy = x * y
        out = xy[..., 1:].sum(-1, keepdim=keepdim) - xy[..., :1].sum(-1, keepdim=keepdim)
    return out


def project(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    """Put ``x`` on the hyperboloid by recomputing ``x0 = sqrt(K + |x⃗|²)``; ``(..., d+1)``."""
    x = upcast(x)
    with full_precision(x):
        space = x[..., 1:]
        time = torch.sqrt(K + (space * space).sum(-1, keepdim=True))
        return torch.cat([time, space], dim=-1)


def expmap0(v: torch.Tensor, K: float = DEFAULT_K, overflow: str = "raise") -> torch.Tensor:
    """Exponential map at the origin: ``(R cosh(|v|/R), R sinh(|v|/R) v/|v|)``.

    Args:
        v: tangent vectors at ``o`` (space part), ``(..., d)``.
        K: ``-<x,x>_L``; ``R = sqrt(K)``.
        overflow: ``"raise"`` or ``"clip"`` for ``|v| > r_max(K, dtype)`` (see module doc).

    Returns:
        Points on the hyperboloid, ``(..., d+1)``.
    """
    R = _radius(K)
    v = upcast(v)
    with full_precision(v):
        n = safe_norm(v)  # (..., 1)
        v, n = cap_norm(v, n, r_max(K, v.dtype), overflow, NAME)
        t = n / R
        space = sinhc(t) * v  # = R sinh(t) v/|v|, exact at v = 0
        time = R * torch.cosh(t)
        return torch.cat([time, space], dim=-1)


def logmap0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    """Logarithmic map at the origin, ``(..., d+1) -> (..., d)``.

    ``|log_o(x)| = R·asinh(|x⃗|/R)``, computed from the space part only.
    """
    R = _radius(K)
    x = upcast(x)
    with full_precision(x):
        space = x[..., 1:]
        z = safe_norm(space) / R
        return asinhc(z) * space


def dist0(x: torch.Tensor, K: float = DEFAULT_K) -> torch.Tensor:
    """Distance to the origin, ``(..., d+1) -> (...)``."""
    R = _radius(K)
    x = upcast(x)
    with full_precision(x):
        space = x[..., 1:]
        return R * torch.asinh(sqrt0((space * space).sum(-1)) / R)


def _polar(x: torch.Tensor, R: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(|x⃗|, asinh(|x⃗|/R), x⃗/|x⃗|)`` with ``|x⃗|`` of shape ``(..., 1)``."""
    space = x[..., 1:]
    n = safe_norm(space)
    return n, torch.asinh(n / R), space / n


def _dist_from_sq(q: torch.Tensor, R: float, squared: bool) -> torch.Tensor:
    """``d = 2R·asinh(sqrt(q)/2R)`` from ``q = |x−y|_L²`` (clamped so the grad is finite at 0)."""
    d = 2 * R * torch.asinh(sqrt0(q) / (2 * R))
    return d * d if squared else d


def dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """Geodesic distance ``R·arcosh(-<x,y>_L/K)`` in a stable form, ``(..., d+1) -> (...)``.

    Exactly 0 for ``x == y``, with finite (zero) gradients there.
    """
    R = _radius(K)
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        nx, s, ux = _polar(x, R)
        ny, t, uy = _polar(y, R)
        radial = 4 * K * torch.sinh((s - t) / 2) ** 2
        angular = nx * ny * ((ux - uy) ** 2).sum(-1, keepdim=True)
        return _dist_from_sq((radial + angular).squeeze(-1), R, squared)


def pairwise_dist(
    x: torch.Tensor, y: torch.Tensor, K: float = DEFAULT_K, squared: bool = False
) -> torch.Tensor:
    """All distances between ``x (B, d+1)`` and ``y (E, d+1)``, ``(B, E)``, with one matmul.

    Same decomposition as :func:`dist`; the angular term uses ``|x̂−ŷ|² = 2 − 2 x̂·ŷ``, whose
    rounding error is ``~eps·|x⃗||y⃗|`` — enough for ranking; re-rank a shortlist with
    :func:`dist` (or in float64) when exact values of close pairs matter.
    """
    R = _radius(K)
    x, y = upcast(x), upcast(y)
    with full_precision(x):
        nx, s, ux = _polar(x, R)  # (B, 1), (B, 1), (B, d)
        ny, t, uy = _polar(y, R)  # (E, 1), (E, 1), (E, d)
        radial = 4 * K * torch.sinh((s - t.T) / 2) ** 2  # (B, E)
        chord = torch.clamp(2 - 2 * (ux @ uy.T), min=0)  # (B, E)
        return _dist_from_sq(radial + (nx * ny.T) * chord, R, squared)


def search_vectors(x: torch.Tensor, role: str) -> torch.Tensor:
    """Vectors whose inner product ranks by Lorentz distance (larger = closer), paper A.8.

    ``role="database"`` returns ``x``; ``role="query"`` flips the time sign, so that
    ``query·database = <q, x>_L = -K·cosh(d/R)``, decreasing in ``d``.
    """
    x = upcast(x)
    if role == "database":
        return x
    if role == "query":
        return torch.cat([-x[..., :1], x[..., 1:]], dim=-1)
    raise ValueError(f"role must be 'query' or 'database', got {role!r}")


def search_extra(q: torch.Tensor) -> None:
    """The per-query term :func:`neg_dist_from_ip` needs besides the inner product: none."""
    return None


def neg_dist_from_ip(ip, K: float, squared: bool, extra=None):
    """``−D`` from search-vector inner products ``ip = <q, x>_L = −K·cosh(d/R)`` (torch or
    NumPy, in their dtype; ``acosh`` written as a log, vectorised on the CPU)."""
    xp = np if isinstance(ip, np.ndarray) else torch
    x = xp.clip(ip * (-1.0 / K), 1.0, None)
    d = xp.log(x + xp.sqrt(x * x - 1)) * math.sqrt(K)
    return -(d * d) if squared else -d


# -- the fused loss's tile (hierloc.losses.fused) ------------------------------------------
# points enter as unit space directions u with scalars (n = |x⃗|, s = asinh(n/R)); per tile
# m = u_b·u_e, q = n_b·n_e·(2 − 2m) + 4K·sinh²((s_b − t_e)/2) = |x − y|_L², D from q.
FUSED_SCALED = True  # ∂q/∂m = −2·n_b·n_e: the matmul operands are scaled by the first scalar


def fused_operands(x: torch.Tensor, K: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The matmul operand (unit space directions) and the per-point scalars ``[n, s]``."""
    R = math.sqrt(K)
    space = x[:, 1:]
    n = safe_norm(space, keepdim=False)
    return space / n[:, None], [n, torch.asinh(n / R)]


def fused_tile(m, rows, cols, K: float, squared: bool, grad: bool):
    """From a tile's matmul ``m (nb, Et)`` (overwritten): ``D``, ``∂D/∂q`` and what the
    scalars' gradients need (the chord ``2 − 2m`` and ``∂q/∂s``)."""
    (n_b, s_b), (n_e, t_e) = rows, cols
    sh = torch.sinh((s_b * 0.5)[:, None] - (t_e * 0.5)[None, :])
    chord = m.mul_(-2).add_(2).clamp_(min=0)
    q = chord * n_b[:, None]
    q.mul_(n_e[None, :]).addcmul_(sh, sh, value=4 * K)
    extra = {}
    if grad:  # ∂q/∂s_b = 2K·sinh(s_b − t_e) = 4K·sh·sqrt(1 + sh²)
        extra = {"chord": chord, "dq_ds": torch.sqrt(sh * sh + 1).mul_(sh).mul_(4 * K)}
    D, dDdq = angle_tile(q, math.sqrt(K), squared, grad, hyperbolic=True)
    return D, dDdq, extra


def fused_scalar_grads(G, extra, rows, cols):
    """``∂L/∂`` each row and column scalar from ``G = ∂L/∂q`` of one tile (overwrites the
    tile's temporaries): ``∂q/∂n_b = n_e·chord``, ``∂q/∂n_e = n_b·chord``,
    ``∂q/∂s_b = −∂q/∂t_e``."""
    (n_b, _), (n_e, _) = rows, cols
    gch = extra["chord"].mul_(G)
    gs = extra["dq_ds"].mul_(G)
    return [gch @ n_e, gs.sum(dim=1)], [n_b @ gch, -gs.sum(dim=0)]
