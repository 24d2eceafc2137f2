"""The geo-weighting kernels of GWH-InfoNCE (HierLoc A.7): ``log k(u)`` for ``u = g/σ`` and, for the
fused loss's learnable-σ gradient, ``σ·∂log k/∂σ`` — one definition for the reference and the
fused loss. A leaf: imports nothing of ours."""

from __future__ import annotations

import difflib

import torch

KERNELS = ("laplace", "gauss", "inverse")


def log_kernel(u: torch.Tensor, kernel: str = "laplace", p: float = 1.0) -> torch.Tensor:
    """``log k(u)`` for ``u = g/σ >= 0``: Laplace ``−u``, Gauss ``−u²``, Inverse ``−p·log1p(u)``."""
    if kernel == "laplace":
        return -u
    if kernel == "gauss":
        return -(u * u)
    if kernel == "inverse":
        return -p * torch.log1p(u)
    close = difflib.get_close_matches(kernel, KERNELS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}.{hint}")


def log_kernel_and_dsigma(
    u: torch.Tensor, kernel: str = "laplace", p: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log k(u)`` and ``σ·∂log k/∂σ`` (``u = g/σ``; ``∂u/∂σ = −u/σ``)."""
    if kernel == "laplace":
        dlog = u
    elif kernel == "gauss":
        dlog = 2 * u * u
    else:
        dlog = p * u / (1 + u)
    return log_kernel(u, kernel, p), dlog
