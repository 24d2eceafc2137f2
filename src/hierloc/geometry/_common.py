"""Numerical helpers shared by the manifolds (see STYLE.md, "Hyperbolic numerics").

Geometry is computed in float32 or float64 only: half-precision inputs are upcast to float32
(and autocast is disabled) because cosh/sinh/asinh lose all precision in 16 bits.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch

from hierloc.errors import ManifoldOverflowError

OVERFLOW_MODES = ("raise", "clip")


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype geometry is computed in for ``x``: float64 stays, everything else is float32."""
    if not torch.is_floating_point(x):
        raise TypeError(f"geometry needs a floating-point tensor, got dtype {x.dtype}")
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def upcast(x: torch.Tensor) -> torch.Tensor:
    """``x`` in its compute dtype (float16/bfloat16 → float32; float32/float64 unchanged)."""
    return x.to(compute_dtype(x))


@contextlib.contextmanager
def full_precision(x: torch.Tensor) -> Iterator[None]:
    """Disable autocast on ``x``'s device, so that matmuls are not silently run in half."""
    device_type = x.device.type
    try:
        ctx = torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not know: nothing to disable
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def tiny(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).tiny


def safe_norm(v: torch.Tensor, keepdim: bool = True) -> torch.Tensor:
    """Euclidean norm over the last dim, clamped at ``finfo.tiny`` before the sqrt.

    The clamp keeps the gradient finite (zero) at ``v == 0``.
    """
    sq = (v * v).sum(dim=-1, keepdim=keepdim)
    return torch.sqrt(torch.clamp(sq, min=tiny(v.dtype)))


def sqrt0(q: torch.Tensor) -> torch.Tensor:
    """``sqrt(q)`` that is exactly 0 for ``q <= 0`` and has finite (zero) gradients there."""
    positive = q > 0
    return torch.where(positive, torch.sqrt(torch.clamp(q, min=tiny(q.dtype))), 0.0)


def series_or(z: torch.Tensor, threshold: float, series, exact) -> torch.Tensor:
    """``series(z)`` where ``|z| < threshold`` and ``exact(z)`` elsewhere, with safe gradients.

    Each branch is evaluated on a sanitized input outside its region, so that its unused
    value and gradient can never be inf/NaN (``0·inf`` in the backward of ``torch.where``).
    """
    small = z.abs() < threshold
    z_exact = torch.where(small, torch.full_like(z, 2 * threshold), z)
    z_series = torch.where(small, z, torch.zeros_like(z))  # z**4 of a large z overflows
    return torch.where(small, series(z_series), exact(z_exact))


def sinhc(t: torch.Tensor) -> torch.Tensor:
    """sinh(t)/t, with its Taylor series near 0 (error below float64 eps for |t| < 1e-2)."""
    return series_or(t, 1e-2, lambda s: 1 + s * s / 6 + s**4 / 120, lambda s: torch.sinh(s) / s)


def asinhc(z: torch.Tensor) -> torch.Tensor:
    """asinh(z)/z, with its Taylor series near 0."""
    return series_or(z, 1e-2, lambda s: 1 - s * s / 6 + 3 * s**4 / 40, lambda s: torch.asinh(s) / s)


def cap_norm(
    v: torch.Tensor, norm: torch.Tensor, cap: float, overflow: str, manifold: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the documented behaviour for tangent vectors with ``|v| > cap``.

    ``overflow="raise"`` raises :class:`ManifoldOverflowError` (one device sync per call);
    ``overflow="clip"`` rescales those vectors to norm ``cap``, keeping their direction.

    Returns:
        ``(v, norm)`` after the cap; shapes unchanged, ``norm`` is ``(..., 1)``.
    """
    if overflow not in OVERFLOW_MODES:
        raise ValueError(f"overflow must be one of {OVERFLOW_MODES}, got {overflow!r}")
    if math.isinf(cap):
        return v, norm
    over = norm > cap  # (..., 1)
    if overflow == "raise":
        if bool(over.any()):
            worst = float(norm.max())
            raise ManifoldOverflowError(
                f"{manifold}.expmap0: a tangent vector has norm {worst:.6g} > r_max = {cap:.6g} "
                f"for {v.dtype} (the documented cap); scale the input down, compute in float64 "
                "(larger cap), or pass overflow='clip' to rescale such vectors to r_max"
            )
        return v, norm
    # Direction from a max-abs-scaled copy, so that |v|^2 overflowing to inf loses nothing.
    scale = v.abs().amax(dim=-1, keepdim=True).clamp(min=tiny(v.dtype))
    w = v / scale
    direction = w / safe_norm(w)
    v = torch.where(over, direction * cap, v)
    norm = torch.where(over, torch.full_like(norm, cap), norm)
    return v, norm


# -- the fused loss's tiles (hierloc.losses.fused): each manifold's distance from one matmul --


def asinh_stable(a: torch.Tensor) -> torch.Tensor:
    """``asinh(a)`` for ``a >= 0`` as ``log1p(a + a²/(1 + sqrt(1 + a²)))``: accurate near 0 and
    vectorised (``torch.asinh`` runs scalar on CPU, ~25× slower)."""
    a2 = a * a
    return torch.log1p(a + a2 / (1 + torch.sqrt(1 + a2)))


def angle_tile(q: torch.Tensor, R: float, squared: bool, grad: bool, hyperbolic: bool):
    """``D = 2R·f(w)``, ``w = sqrt(q)/2R`` (``f = asinh`` on the hyperboloid, ``asin`` on the
    sphere) from a tile of squared chords ``q``, and with ``grad`` ``∂D/∂q`` (``∂D²/∂q`` when
    ``squared``; 0 where ``q = 0``, like ``sqrt0``). Overwrites ``q``'s temporaries only."""
    tiny = torch.finfo(q.dtype).tiny
    w = torch.sqrt(q).mul_(1 / (2 * R)).clamp_(min=tiny)  # tiny: ratios below stay finite
    if hyperbolic:
        ang = asinh_stable(w)
        slope = torch.sqrt(w * w + 1) if grad else None  # 1/(∂asinh/∂w)
    else:
        w.clamp_(max=1.0)
        ang = torch.asin(w)
        slope = torch.sqrt((1 - w * w).clamp_(min=torch.finfo(q.dtype).eps)) if grad else None
    dDdq = None
    if grad:
        if squared:  # ∂(D²)/∂q = ang/(w·slope)
            dDdq = (ang / w).div_(slope)
        else:  # ∂D/∂q = 1/(2·sqrt(q)·slope)
            dDdq = torch.where(q > 0, 0.25 / R / (w * slope), 0.0)
    D = ang.mul_(2 * R)
    if squared:
        D.mul_(D)
    return D, dDdq
