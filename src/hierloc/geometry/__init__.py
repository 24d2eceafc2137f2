"""Manifolds behind one interface: Lorentz (HierLoc), Euclidean and sphere (Table 6 ablation).

Usage::

    from hierloc.geometry import get_manifold
    M = get_manifold("lorentz", K=0.8)
    z = M.expmap0(v)                     # (B, d) -> (B, d+1)
    D = M.pairwise_dist(z, entities)     # (B, E)

The pure functions live in :mod:`hierloc.geometry.lorentz` (imported as ``L`` by convention),
:mod:`~hierloc.geometry.sphere` and :mod:`~hierloc.geometry.euclidean`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from types import ModuleType

import torch

from hierloc.geometry import euclidean, lorentz, sphere

_REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (lorentz, euclidean, sphere)}


@dataclass(frozen=True)
class Manifold:
    """A manifold with fixed ``K``; every method documents shapes in its module function.

    Attributes:
        name: ``"lorentz"``, ``"euclidean"`` or ``"sphere"``.
        K: Lorentz ``-<x,x>_L``, sphere radius squared; ignored by Euclidean.
    """

    name: str
    K: float

    @property
    def module(self) -> ModuleType:
        """The manifold's geometry module: its pure functions and the fused loss's tile form
        (``fused_operands``, ``fused_tile``, ``fused_scalar_grads``, ``FUSED_SCALED``)."""
        return _REGISTRY[self.name]

    def ambient_dim(self, d: int) -> int:
        """Coordinates of a point for tangent dimension ``d``."""
        return d if self.name == euclidean.NAME else d + 1

    def r_max(self, dtype: torch.dtype = torch.float32) -> float:
        return self.module.r_max(self.K, dtype)

    def origin(self, d: int, dtype=torch.float32, device=None) -> torch.Tensor:
        return self.module.origin(d, self.K, dtype=dtype, device=device)

    def expmap0(self, v: torch.Tensor, overflow: str = "raise") -> torch.Tensor:
        return self.module.expmap0(v, self.K, overflow=overflow)

    def logmap0(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.logmap0(x, self.K)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.project(x, self.K)

    def dist0(self, x: torch.Tensor) -> torch.Tensor:
        return self.module.dist0(x, self.K)

    def dist(self, x: torch.Tensor, y: torch.Tensor, squared: bool = False) -> torch.Tensor:
        return self.module.dist(x, y, self.K, squared=squared)

    def pairwise_dist(
        self, x: torch.Tensor, y: torch.Tensor, squared: bool = False
    ) -> torch.Tensor:
        return self.module.pairwise_dist(x, y, self.K, squared=squared)

    def search_vectors(self, x: torch.Tensor, role: str) -> torch.Tensor:
        return self.module.search_vectors(x, role)

    def search_extra(self, q: torch.Tensor):
        """What :meth:`neg_dist_from_ip` needs per query besides the inner product (Euclidean:
        ``|q|²``; ``None`` elsewhere)."""
        return self.module.search_extra(q)

    @property
    def search_form(self) -> int:
        """The code of this manifold's score form in the compiled search
        (:mod:`hierloc.search.kernels`: 0 Lorentz, 1 Euclidean, 2 sphere)."""
        return self.module.SEARCH_FORM

    def neg_dist_from_ip(self, ip, squared: bool, extra=None):
        """``−D`` (squared or not) from inner products of :meth:`search_vectors` (query ·
        database), torch tensors or NumPy arrays in their own dtype, so that search engines
        never branch on the manifold."""
        return self.module.neg_dist_from_ip(ip, self.K, squared, extra)


def available_manifolds() -> list[str]:
    return sorted(_REGISTRY)


def get_manifold(name: str, K: float | None = None) -> Manifold:
    """The manifold registered as ``name``; ``K`` defaults to the manifold's own default."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown manifold {name!r}; choose one of {available_manifolds()}.{hint}")
    module = _REGISTRY[key]
    K = module.DEFAULT_K if K is None else float(K)
    if not K > 0:
        raise ValueError(f"K must be > 0, got {K}")
    return Manifold(key, K)


__all__ = ["Manifold", "available_manifolds", "get_manifold", "euclidean", "lorentz", "sphere"]
