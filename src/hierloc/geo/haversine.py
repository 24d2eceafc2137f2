"""The one great-circle distance of hierloc (OSV5M's formula and Earth radius).

Works on NumPy arrays (float64 recommended) and on torch tensors (for losses), in degrees.
"""

from __future__ import annotations

import numpy as np

EARTH_RADIUS_KM = 6371.0  # OSV5M's constant (metrics/utils.py)


def _namespace(x):
    """``torch`` for a tensor (imported only then: NumPy callers never load it), else NumPy."""
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    return np


def haversine_km(lat1, lon1, lat2, lon2):
    """Great-circle distance in km between points given in degrees; broadcasts.

    OSV5M's form ``2R·atan2(sqrt(a), sqrt(1−a))`` with ``a = sin²(Δφ/2) + cos φ1 cos φ2
    sin²(Δλ/2)`` clipped to [0, 1]. Like every haversine it is ill-conditioned at antipodes
    (relative error ~1e-8 in float64 there).
    """
    xp = _namespace(lat1)
    if xp is np:
        lat1, lon1, lat2, lon2 = (np.asarray(a, dtype=np.float64) for a in (lat1, lon1, lat2, lon2))
    phi1, phi2 = xp.deg2rad(lat1), xp.deg2rad(lat2)
    dphi = phi2 - phi1
    dlam = xp.deg2rad(lon2) - xp.deg2rad(lon1)
    a = xp.sin(dphi / 2) ** 2 + xp.cos(phi1) * xp.cos(phi2) * xp.sin(dlam / 2) ** 2
    a = xp.clip(a, 0.0, 1.0)
    return 2 * EARTH_RADIUS_KM * xp.arctan2(xp.sqrt(a), xp.sqrt(1 - a))


def unit_vectors(lat, lon):
    """Degrees → unit vectors ``(..., 3)``; NumPy or torch like :func:`haversine_km`."""
    xp = _namespace(lat)
    phi, lam = xp.deg2rad(lat), xp.deg2rad(lon)
    c = xp.cos(phi)
    return xp.stack([c * xp.cos(lam), c * xp.sin(lam), xp.sin(phi)], -1)


def pairwise_km(a_xyz, b_xyz):
    """Great-circle km between every pair of unit vectors ``(B, 3) × (E, 3) -> (B, E)``.

    The same distance as :func:`haversine_km`, as one matmul: ``2R·asin(|a−b|/2)`` with
    ``|a−b|² = 2 − 2 a·b``. Use float64 inputs for metre-level accuracy on close pairs
    (float32 resolves ~20 km near zero, enough for a loss kernel with σ ≈ 1,000 km).
    """
    xp = _namespace(a_xyz)
    chord_sq = xp.clip(2 - 2 * (a_xyz @ b_xyz.T), 0.0, 4.0)
    return km_from_chord(xp.sqrt(chord_sq))


def km_from_chord(chord):
    """Great-circle km from the chord ``|a−b|`` between unit vectors: ``2R·asin(chord/2)``
    (NumPy or torch; torch works in place after the first operation, for the loss's tiles)."""
    xp = _namespace(chord)
    if xp is not np:
        return xp.asin(chord.mul(0.5).clamp_(0.0, 1.0)).mul_(2 * EARTH_RADIUS_KM)
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.clip(np.asarray(chord) / 2, 0.0, 1.0))
