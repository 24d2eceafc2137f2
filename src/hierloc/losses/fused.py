"""GWH-InfoNCE over every entity of a level in one memory-bounded pass, with hand-derived
gradients: the training loss at the paper's scale (210k cities per level).

:func:`hierloc.losses.gwh.gwh_infonce` on :meth:`Manifold.pairwise_dist` builds a dozen ``B × E``
tensors and keeps them for autograd: at 4,096 images × 245k entities that is tens of GB and most
of the step time. Here the images go in blocks of ``max_rows``, each block in tiles of about
``chunk_elems`` image-entity pairs (a few MB, so a tile's temporaries stay in cache), and the
forward pass also computes the gradients, so that nothing larger than ``max_rows × E`` is ever
held. The loss returned is the **mean** over rows, a scalar: its backward only scales the
stored gradients.

Per tile (``m`` the one matmul of the tile, ``q`` the manifold's squared "chord" and ``D``
the (squared) distance, see the geometry modules for the forms):

* logits ``ℓ = −D/τ + log w`` (``log w = log1p(λ·k(g/σ))`` on negatives, 0 on the positive,
  ``g`` great-circle km from the image to the entity's mean location);
* loss ``lse(ℓ) − ℓ⁺``; ``R = (softmax(ℓ) − onehot)/B`` is ``∂L/∂ℓ``;
* ``∂L/∂τ = Σ R·D/τ²``; ``∂L/∂λ``, ``∂L/∂σ`` from ``∂ℓ/∂λ = k/(1+λk)`` (negatives only);
* ``G = ∂L/∂q = −R/τ · ∂D/∂q``, then ``∂L/∂m``, row and column sums for the manifold's
  per-point scalars — the matmul-shaped ones as matmuls.

Gradients flow on by autograd through the cheap per-point preparation (``O(B + E)``), e.g. the
Lorentz polar form. Tested against autograd of the reference loss on every manifold, kernel,
squared/unsquared distance and learnable/fixed λ, σ.

Great-circle distances are computed in float32 from unit vectors (resolution ~2 km near zero:
the kernel's σ is ~1,000 km); the hyperbolic geometry in float32 or float64 as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import torch

from hierloc.geo.haversine import km_from_chord
from hierloc.geometry import Manifold
from hierloc.geometry._common import full_precision, upcast
from hierloc.losses.kernels import KERNELS, log_kernel_and_dsigma


@dataclass(frozen=True)
class FusedSpec:
    form: ModuleType  # the manifold's geometry module: fused_operands, fused_tile, …
    K: float
    squared: bool = True
    gwh: bool = True
    kernel: str = "laplace"
    p: float = 1.0
    chunk_elems: int = 2**19  # pairs per tile (kept in cache)
    max_rows: int = 512  # images per row block (a few (rows, E) buffers are kept)
    neg_offset: float = 0.0  # added to every negative's logit (sampled-negatives correction)


def _log_w(spec: FusedSpec, img_xyz, ent_xyz, lam: float, sigma: float, grad_sigma: bool):
    """``log w = log1p(λ·k(g/σ))`` of one tile, plus ``k`` and ``σ·∂log k/∂σ`` when needed."""
    chord_sq = (img_xyz @ ent_xyz.T).mul_(-2).add_(2).clamp_(0, 4)
    g = km_from_chord(torch.sqrt(chord_sq))
    log_k, dlogk = log_kernel_and_dsigma(g.div_(sigma), spec.kernel, spec.p)
    k = torch.exp(log_k)
    return torch.log1p(k * lam), k, (dlogk if grad_sigma else None)


class _FusedLevelLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec, target, a, c, r0, r1, c0, c1, img_xyz, ent_xyz, tau, lam, sigma):
        B, E = a.shape[0], c.shape[0]
        needs = ctx.needs_input_grad
        want = any(needs)
        inv_tau = float(1.0 / tau)
        lam_v = float(lam) if lam is not None else 0.0
        sig = float(sigma) if sigma is not None else 1.0
        gwh = spec.gwh and img_xyz is not None and lam_v > 0
        need_lam, need_sigma = gwh and needs[11], gwh and needs[12]
        form = spec.form
        scaled = form.FUSED_SCALED  # ∂q/∂m = −2·r_b·c_e (the first scalars), else −2
        row_s = [r for r in (r0, r1) if r is not None]
        col_s = [v for v in (c0, c1) if v is not None]
        ga, gc = torch.zeros_like(a), torch.zeros_like(c)
        g_rows = [torch.zeros_like(r) for r in row_s]
        g_cols = [torch.zeros_like(v) for v in col_s]
        # the scalar gradients stay on the device (float64) until the end: no host sync per tile
        g_tau, g_lam, g_sigma = (
            torch.zeros((), dtype=torch.float64, device=a.device) for _ in range(3)
        )
        losses = torch.empty(B, dtype=a.dtype, device=a.device)
        c_op = c * c0[:, None] if scaled else c  # c_e·u_e: ∂L/∂u_b as one matmul
        row_chunk = max(1, min(B, spec.max_rows))
        width = max(8, spec.chunk_elems // row_chunk)
        tiles = [(e0, min(E, e0 + width)) for e0 in range(0, E, width)]
        for b0 in range(0, B, row_chunk):
            sl = slice(b0, min(B, b0 + row_chunk))
            nb = sl.stop - sl.start
            ab, tgt = a[sl], target[sl]
            rows = [r[sl] for r in row_s]
            # pass 1, per tile: logits (positives without log w), and what pass 2 needs —
            # stored (a few floats per pair, read back once) rather than recomputed
            stored, tile_lse = [], []
            pos_logit = torch.empty(nb, dtype=a.dtype, device=a.device)
            for e0, e1 in tiles:
                pos = _positives(tgt, e0, e1)  # (nb, e1 − e0): the target's column, as a mask
                cols = [v[e0:e1] for v in col_s]
                D, dDdq, extra = form.fused_tile(
                    ab @ c[e0:e1].T, rows, cols, spec.K, spec.squared, want
                )
                lg = D * -inv_tau
                if gwh:
                    lw, _, _ = _log_w(spec, img_xyz[sl], ent_xyz[e0:e1], lam_v, sig, False)
                    lw.masked_fill_(pos, 0.0)
                    lg.add_(lw)
                if spec.neg_offset:
                    lg.add_(spec.neg_offset)
                    lg.sub_(pos.to(lg.dtype), alpha=spec.neg_offset)
                # the positive's logit where it is in this tile (a sum of zeros and one value)
                pos_logit = torch.where(pos.any(1), lg.masked_fill(~pos, 0.0).sum(1), pos_logit)
                tile_lse.append(torch.logsumexp(lg, dim=1))
                stored.append((lg, D, dDdq, extra) if want else None)
            lse = torch.logsumexp(torch.stack(tile_lse), dim=0)
            losses[sl] = lse - pos_logit
            if not want:
                continue
            ab_op = ab * rows[0][:, None] if scaled else ab
            # pass 2: R = (softmax − onehot)/B = ∂L/∂logit, then the chain back to m
            for (e0, e1), (lg, D, dDdq, extra) in zip(tiles, stored, strict=True):
                pos = _positives(tgt, e0, e1)
                Rm = lg.sub_(lse[:, None]).exp_().mul_(1.0 / B)
                Rm.sub_(pos.to(Rm.dtype), alpha=1.0 / B)
                if needs[10]:  # ∂logit/∂τ = D/τ²
                    g_tau += torch.dot(Rm.flatten(), D.flatten()).double() * inv_tau**2
                if need_lam or need_sigma:  # ∂logit/∂λ = k/(1+λk) on negatives
                    lw, k, dlogk = _log_w(spec, img_xyz[sl], ent_xyz[e0:e1], lam_v, sig, need_sigma)
                    t_lam = k.mul_(torch.exp(lw.neg_()))
                    t_lam.masked_fill_(pos, 0.0)
                    pr = t_lam.mul_(Rm)
                    if need_lam:
                        g_lam += pr.sum().double()
                    if need_sigma:  # σ·∂log k/∂σ = dlogk
                        g_sigma += torch.dot(pr.flatten(), dlogk.flatten()).double() * lam_v / sig
                G = Rm.mul_(-inv_tau)
                if dDdq is not None:
                    G.mul_(dDdq)  # ∂L/∂q
                cols = [v[e0:e1] for v in col_s]
                ga[sl].addmm_(G, c_op[e0:e1])  # × −2·r_b after the last tile
                gc[e0:e1].addmm_(G.T, ab_op, alpha=-2.0)  # × c_e at the very end
                row_g, col_g = form.fused_scalar_grads(G, extra, rows, cols)
                for acc, g in zip(g_rows, row_g, strict=True):
                    acc[sl] += g
                for acc, g in zip(g_cols, col_g, strict=True):
                    acc[e0:e1] += g
            del stored
            ga[sl].mul_(-2 * rows[0][:, None] if scaled else -2.0)
        if scaled:
            gc.mul_(c0[:, None])
        layout = [r is not None for r in (r0, r1, c0, c1)]
        ctx.save_for_backward(ga, gc, *g_rows, *g_cols)
        ctx.layout = layout
        ctx.scalars = (g_tau, g_lam, g_sigma)
        return losses.mean()

    @staticmethod
    def backward(ctx, go):
        ga, gc, *scalars = ctx.saved_tensors
        rest = iter(scalars)
        needs = ctx.needs_input_grad
        per_point = [next(rest) * go if present else None for present in ctx.layout]
        per_point = [g if need else None for g, need in zip(per_point, needs[4:8], strict=True)]
        g_scalars = [  # one host read per backward, not one per tile
            go * float(v) if need else None
            for v, need in zip(ctx.scalars, needs[10:13], strict=True)
        ]
        return (None, None, ga * go, gc * go, *per_point, None, None, *g_scalars)


def _positives(target: torch.Tensor, e0: int, e1: int) -> torch.Tensor:
    """``(B, e1 − e0)`` bool: True at each row's target column when it lies in ``[e0, e1)``."""
    cols = torch.arange(e0, e1, device=target.device)
    return target[:, None] == cols[None, :]


def fused_level_loss(
    manifold: Manifold,
    z: torch.Tensor,
    h: torch.Tensor,
    target: torch.Tensor,
    tau: torch.Tensor,
    *,
    squared: bool = True,
    img_xyz: torch.Tensor | None = None,
    ent_xyz: torch.Tensor | None = None,
    lam: torch.Tensor | float | None = None,
    sigma_km: torch.Tensor | float | None = None,
    kernel: str = "laplace",
    p: float = 1.0,
    chunk_elems: int = 2**19,
    max_rows: int = 512,
    neg_offset: float = 0.0,
) -> torch.Tensor:
    """Mean over images of GWH-InfoNCE (or InfoNCE with ``img_xyz=None`` or ``lam=0``) of one
    level: the same value and gradients as ``gwh_infonce(pairwise_dist(z, h) [**2], target,
    pairwise_km(...), tau, lam, sigma_km, kernel, p).mean()``, in ``O(chunk)`` memory.

    Args:
        z: ``(B, D)`` image points; h: ``(E, D)`` entity points (``manifold``'s ambient dims).
        target: ``(B,)`` positive entity index per image (all valid).
        tau: temperature (tensor, may require grad); lam, sigma_km: floats or tensors.
        img_xyz, ent_xyz: unit vectors ``(B, 3)``, ``(E, 3)`` of the image / entity locations.
        neg_offset: a constant added to every negative's logit: ``log((E_all − 1)/(E − 1))``
            when ``h`` is a uniform sample of a level's ``E_all`` entities, so that the sampled
            denominator estimates the full one (sampled-softmax correction).
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= h.shape[0]):
        raise ValueError(f"target indices must lie in [0, {h.shape[0]}) for this level")
    spec = FusedSpec(
        manifold.module,
        float(manifold.K),
        squared,
        img_xyz is not None,
        kernel,
        p,
        chunk_elems,
        max_rows,
        float(neg_offset),
    )
    z, h = upcast(z), upcast(h)
    dt = z.dtype
    with full_precision(z):
        a, rs = spec.form.fused_operands(z, spec.K)
        c, cs = spec.form.fused_operands(h.to(dt), spec.K)
        rs, cs = rs + [None] * (2 - len(rs)), cs + [None] * (2 - len(cs))

        def scalar(v):
            if v is None or isinstance(v, torch.Tensor):
                return v
            return torch.tensor(float(v), dtype=dt, device=z.device)

        tau = scalar(tau)
        if spec.gwh:
            img_xyz = img_xyz.to(dt)
            ent_xyz = ent_xyz.to(dt)
        return _FusedLevelLoss.apply(
            spec, target, a, c, *rs, *cs, img_xyz, ent_xyz, tau, scalar(lam), scalar(sigma_km)
        )
