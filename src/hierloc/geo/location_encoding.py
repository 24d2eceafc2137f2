"""SphereM+ location encoding (Mai et al. 2023, "Sphere2Vec", the sphereM+ variant), written
from the paper's definition.

For latitude ``φ`` and longitude ``λ`` in radians and ``S`` scales with angular frequencies
``ω_s`` spaced geometrically between ``1/r_max`` and ``1/r_min``, each scale contributes

    sin(ω_s φ), cos(ω_s φ), sin(ω_s λ), cos(ω_s λ),
    cos(ω_s φ)·cos λ, cos φ·cos(ω_s λ), cos(ω_s φ)·sin λ, cos φ·sin(ω_s λ)

— ``8·S`` features in [−1, 1]. The products with the single-scale ``cos λ, sin λ, cos φ``
terms tie the multi-scale sinusoids to positions on the sphere (they are continuous at the
poles). Defaults: ``S = 16``, ``r_min = 1e-3`` rad (~6 km), ``r_max = π``.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def frequencies(scales: int = 16, r_min: float = 1e-3, r_max: float = math.pi) -> np.ndarray:
    """``(S,)`` angular frequencies ``1/r``, ``r`` geometric from ``r_min`` to ``r_max``."""
    if scales < 1 or not 0 < r_min < r_max:
        raise ValueError("need scales >= 1 and 0 < r_min < r_max")
    if scales == 1:
        return np.array([1.0 / r_max])
    return 1.0 / np.geomspace(r_min, r_max, scales)


def sphere_m_plus(lat, lon, scales: int = 16, r_min: float = 1e-3, r_max: float = math.pi):
    """Encode degrees ``(N,), (N,)`` into ``(N, 8·S)``; NumPy in → NumPy out, torch → torch."""
    is_torch = type(lat).__module__.startswith("torch")
    if is_torch:
        xp = torch
        w = torch.as_tensor(frequencies(scales, r_min, r_max), dtype=lat.dtype, device=lat.device)
    else:
        xp = np
        lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
        w = frequencies(scales, r_min, r_max)
    phi = xp.deg2rad(lat)[:, None]  # (N, 1)
    lam = xp.deg2rad(lon)[:, None]
    wp, wl = w[None, :] * phi, w[None, :] * lam  # (N, S)
    feats = [
        xp.sin(wp),
        xp.cos(wp),
        xp.sin(wl),
        xp.cos(wl),
        xp.cos(wp) * xp.cos(lam),
        xp.cos(phi) * xp.cos(wl),
        xp.cos(wp) * xp.sin(lam),
        xp.cos(phi) * xp.sin(wl),
    ]
    out = xp.stack(feats, -1)  # (N, S, 8)
    return out.reshape(out.shape[0], -1)
