"""GWH-InfoNCE (HierLoc §3.6, A.4, A.7) and plain InfoNCE, apart from any model.

Per level, every entity of the level is a candidate; the positive is the image's entity.
With ``d`` the (squared, by default) hyperbolic distance and ``τ`` the temperature,

    L = −log( exp(−d⁺/τ) / (exp(−d⁺/τ) + Σ_k w_k exp(−d⁻_k/τ)) ),   w_k = 1 + λ·k(g_k/σ),

``g_k`` the great-circle distance (km) from the image's location to negative entity ``k``'s
mean location, and ``k`` a kernel: Laplace ``exp(−u)`` (default), Gauss ``exp(−u²)``, Inverse
``(1+u)^−p``. Computed stably as a logsumexp of ``−d/τ + log w`` with ``log w =
log1p(λ·k(u))`` from ``log k(u)``, and ``log w = 0`` for the positive. Total: ``Σ β_ℓ L_ℓ``.

**Decision** (papers.md; the paper learns λ, σ, τ): minimising this same loss always pushes λ
towards 0 (or σ towards 0), since larger weights only enlarge the denominator — GWH would
silently collapse to InfoNCE. So λ (default 1.0) and σ (default 1,000 km) are fixed by default;
``learnable=True`` reproduces the paper's literal setting (and its collapse, which a test
demonstrates). τ (init 0.1) is learned as a log-parameter clamped to ``[tau_min, tau_max]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hierloc.checks import ConfigValueError, flag, number, one_of
from hierloc.losses.fused import fused_level_loss
from hierloc.losses.kernels import KERNELS, log_kernel


def gwh_infonce(
    dist: torch.Tensor,
    target: torch.Tensor,
    geo_km: torch.Tensor | None,
    tau: torch.Tensor | float,
    lam: torch.Tensor | float = 1.0,
    sigma_km: torch.Tensor | float = 1000.0,
    kernel: str = "laplace",
    p: float = 1.0,
    neg_offset: float = 0.0,
) -> torch.Tensor:
    """Per-sample GWH-InfoNCE of one level.

    Args:
        dist: ``(B, E)`` distances image → every entity of the level (squared or not, as the
            caller chooses).
        target: ``(B,)`` index of the positive entity.
        geo_km: ``(B, E)`` great-circle km image → entity mean location; ``None`` or ``lam = 0``
            gives plain InfoNCE.
        tau, lam, sigma_km: temperature, weight scale, kernel bandwidth (tensors or floats).
        neg_offset: added to every negative's logit (the sampled-softmax correction of
            :func:`~hierloc.losses.fused.fused_level_loss`).

    Returns:
        ``(B,)`` losses.
    """
    logits = -dist / tau  # (B, E)
    positive = torch.nn.functional.one_hot(target, dist.shape[1]).bool()
    if geo_km is not None:
        log_k = log_kernel(geo_km / sigma_km, kernel, p)
        log_w = torch.log1p(lam * torch.exp(log_k))  # (B, E), >= 0
        logits = logits + log_w.masked_fill(positive, 0.0)
    if neg_offset:
        logits = logits + (~positive) * neg_offset
    pos_logit = (-dist / tau).gather(1, target[:, None]).squeeze(1)
    return torch.logsumexp(logits, dim=1) - pos_logit


def infonce(dist: torch.Tensor, target: torch.Tensor, tau: torch.Tensor | float) -> torch.Tensor:
    """Plain InfoNCE over distances: ``−log softmax(−d/τ)[target]``, ``(B, E) -> (B,)``."""
    return gwh_infonce(dist, target, None, tau)


@dataclass(frozen=True)
class LossConfig:
    """Loss settings (paper defaults: GWH, Laplace, λ = 1, τ = 0.1, squared distances)."""

    loss: str = "gwh"  # "gwh" | "infonce"
    kernel: str = "laplace"
    lam: float = 1.0
    sigma_km: float = 1000.0
    p: float = 1.0
    learnable: bool = False  # learn λ and σ too (the paper's literal setting; collapses)
    tau_init: float = 0.1
    tau_min: float = 0.01
    tau_max: float = 1.0
    squared_distance: bool = True
    level_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        one_of("loss", self.loss, ("gwh", "infonce"))
        one_of("kernel", self.kernel, KERNELS)
        number("lam", self.lam, 0)
        number("sigma_km", self.sigma_km, 0, low_open=True)
        number("p", self.p, 0, low_open=True)
        flag("learnable", self.learnable)
        number("tau_min", self.tau_min, 0, low_open=True)
        number("tau_max", self.tau_max, self.tau_min)
        number("tau_init", self.tau_init, self.tau_min, self.tau_max)
        flag("squared_distance", self.squared_distance)
        for w in self.level_weights:
            number("level_weights", w, 0)
        if not any(self.level_weights):
            raise ConfigValueError("level_weights", list(self.level_weights), "not all zero")


class GWHInfoNCE(torch.nn.Module):
    """The loss with its positive scalars as log-parameters (τ always learned; λ, σ only with
    ``learnable``). ``forward`` sums ``β_ℓ·mean_b L_ℓ`` over levels."""

    def __init__(self, config: LossConfig = LossConfig()) -> None:  # noqa: B008 (frozen)
        super().__init__()
        if config.loss not in ("gwh", "infonce"):
            raise ValueError(f"loss must be 'gwh' or 'infonce', got {config.loss!r}")
        log_kernel(torch.zeros(1), config.kernel, config.p)  # validates the kernel name
        self.config = config
        self.log_tau = torch.nn.Parameter(torch.tensor(math.log(config.tau_init)))
        log_lam = torch.tensor(math.log(max(config.lam, 1e-12)))
        log_sigma = torch.tensor(math.log(config.sigma_km))
        if config.learnable:
            self.log_lam = torch.nn.Parameter(log_lam)
            self.log_sigma = torch.nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_lam", log_lam)
            self.register_buffer("log_sigma", log_sigma)

    @property
    def tau(self) -> torch.Tensor:
        c = self.config
        return self.log_tau.clamp(math.log(c.tau_min), math.log(c.tau_max)).exp()

    @property
    def lam(self) -> torch.Tensor:
        return self.log_lam.exp() if self.config.lam > 0 else self.log_lam.new_zeros(())

    @property
    def sigma_km(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def level_loss(
        self,
        dist: torch.Tensor,
        target: torch.Tensor,
        geo_km: torch.Tensor | None,
        positive: torch.Tensor | None = None,
        neg_offset: float = 0.0,
    ) -> torch.Tensor:
        """``(B,)`` losses of one level from unsquared distances ``(B, E)``; ``positive``
        ``(B,)``: each image's distance to its positive, in place of ``dist``'s target column
        (the leave-one-out positives of ``model.loo_means``); ``neg_offset``: see
        :func:`gwh_infonce`."""
        c = self.config
        if positive is not None:
            dist = dist.scatter(1, target[:, None], positive[:, None].to(dist.dtype))
        d = dist * dist if c.squared_distance else dist
        if c.loss == "infonce":
            geo_km = None
        return gwh_infonce(
            d, target, geo_km, self.tau, self.lam, self.sigma_km, c.kernel, c.p, neg_offset
        )

    def forward(
        self,
        dists: list[torch.Tensor],
        targets: list[torch.Tensor],
        geo_km: list[torch.Tensor | None],
        positives: list[torch.Tensor | None] | None = None,
        neg_offsets: list[float] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(total, per-level mean losses)``; lists are per level, coarse → fine;
        ``positives``, ``neg_offsets``: per level, see :meth:`level_loss`."""
        weights = self.config.level_weights
        positives = positives or [None] * len(dists)
        offsets = neg_offsets or [0.0] * len(dists)
        per_level = [
            self.level_loss(d, t, g, pos, off).mean()
            for d, t, g, pos, off in zip(dists, targets, geo_km, positives, offsets, strict=True)
        ]
        total = sum(w * lv for w, lv in zip(weights, per_level, strict=False))
        return total, per_level

    def points_loss(
        self,
        manifold,
        z: torch.Tensor,
        entities: list[torch.Tensor],
        targets: list[torch.Tensor],
        img_xyz: torch.Tensor | None,
        ent_xyz: list[torch.Tensor],
        neg_offsets: list[float] | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The same total as :meth:`forward` on ``manifold.pairwise_dist(z, h)``, straight from
        the points, through :func:`hierloc.losses.fused.fused_level_loss` (memory-bounded, hand
        gradients): what the trainer uses. ``img_xyz``/``ent_xyz``: unit vectors of the image
        and entity locations; ``neg_offsets``: per level, the sampled-negatives correction of
        :func:`~hierloc.losses.fused.fused_level_loss` (``None``: all entities, no correction)."""
        c = self.config
        gwh = c.loss == "gwh" and img_xyz is not None
        offsets = neg_offsets or [0.0] * len(entities)
        per_level = [
            fused_level_loss(
                manifold,
                z,
                h,
                t,
                self.tau,
                squared=c.squared_distance,
                img_xyz=img_xyz if gwh else None,
                ent_xyz=e,
                lam=self.lam,
                sigma_km=self.sigma_km,
                kernel=c.kernel,
                p=c.p,
                neg_offset=off,
            )
            for h, t, e, off in zip(entities, targets, ent_xyz, offsets, strict=True)
        ]
        total = sum(w * lv for w, lv in zip(c.level_weights, per_level, strict=False))
        return total, per_level
