"""The fused, tiled GWH-InfoNCE (hand-derived gradients) against autograd through the reference
``pairwise_dist`` + ``gwh_infonce`` (float64), on every manifold, kernel, squared/unsquared
distance, learnable or fixed λ and σ, with tiles and row blocks small enough that every
boundary case (a positive in each tile, ragged last tile) occurs."""

from __future__ import annotations

import itertools

import pytest
import torch

from hierloc.geo.haversine import pairwise_km
from hierloc.geometry import get_manifold
from hierloc.geometry._common import asinh_stable
from hierloc.losses import gwh_infonce
from hierloc.losses.fused import fused_level_loss

CASES = list(
    itertools.product(
        ["lorentz", "sphere", "euclidean"], [True, False], ["laplace", "gauss", "inverse"]
    )
)


def _inputs(seed, B=9, E=37, d=6):
    g = torch.Generator().manual_seed(seed)
    v1 = (torch.randn(B, d, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    v2 = (torch.randn(E, d, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    t = torch.randint(0, E, (B,), generator=g)
    ix = torch.nn.functional.normalize(torch.randn(B, 3, generator=g, dtype=torch.float64), dim=1)
    ex = torch.nn.functional.normalize(torch.randn(E, 3, generator=g, dtype=torch.float64), dim=1)
    return v1, v2, t, ix, ex


@pytest.mark.parametrize(("manifold", "squared", "kernel"), CASES)
@pytest.mark.parametrize("learnable", [False, True])
def test_fused_equals_autograd_of_the_reference(manifold, squared, kernel, learnable):
    M = get_manifold(manifold, K=1.3 if manifold == "sphere" else 0.8)
    v1, v2, t, ix, ex = _inputs(CASES.index((manifold, squared, kernel)))
    log_tau = torch.tensor(-1.5, dtype=torch.float64, requires_grad=True)
    log_lam = torch.tensor(0.2, dtype=torch.float64, requires_grad=learnable)
    log_sigma = torch.tensor(8.0, dtype=torch.float64, requires_grad=learnable)
    leaves = [v1, v2, log_tau] + ([log_lam, log_sigma] if learnable else [])

    def reference():
        D = M.pairwise_dist(M.expmap0(v1), M.expmap0(v2), squared=squared)
        return gwh_infonce(
            D, t, pairwise_km(ix, ex), log_tau.exp(), log_lam.exp(), log_sigma.exp(), kernel, 1.5
        ).mean()

    def fused():  # 4-row blocks × 10-entity tiles
        return fused_level_loss(
            M,
            M.expmap0(v1),
            M.expmap0(v2),
            t,
            log_tau.exp(),
            squared=squared,
            img_xyz=ix,
            ent_xyz=ex,
            lam=log_lam.exp(),
            sigma_km=log_sigma.exp(),
            kernel=kernel,
            p=1.5,
            chunk_elems=40,
            max_rows=4,
        )

    results = []
    for f in (reference, fused):
        loss = f()
        results.append([loss.detach(), *torch.autograd.grad(loss, leaves)])
    for name, r, f in zip(["loss", "v1", "v2", "tau", "lam", "sigma"], *results, strict=False):
        assert torch.allclose(f, r, rtol=1e-10, atol=1e-12), name
        assert torch.any(r != 0), name  # every gradient is exercised


def test_infonce_without_locations_and_float32_without_grad():
    M = get_manifold("lorentz", K=0.8)
    v1, v2, t, _, _ = _inputs(3)
    z, h = M.expmap0(v1.detach().float()), M.expmap0(v2.detach().float())
    ref = gwh_infonce(M.pairwise_dist(z, h, squared=True), t, None, 0.1).mean()
    got = fused_level_loss(M, z, h, t, torch.tensor(0.1), chunk_elems=40, max_rows=4)
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, rtol=1e-5)


def test_coincident_points_have_finite_gradients():
    M = get_manifold("lorentz", K=0.8)
    v = (torch.randn(5, 4, dtype=torch.float64) * 0.5).requires_grad_()
    z = M.expmap0(v)
    loss = fused_level_loss(M, z, z, torch.arange(5), torch.tensor(0.1, dtype=torch.float64))
    (g,) = torch.autograd.grad(loss, v)
    assert torch.isfinite(g).all()


def test_bad_targets_are_rejected():
    M = get_manifold("euclidean")
    z = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 3\)"):
        fused_level_loss(M, z, z, torch.tensor([0, 1, 3]), torch.tensor(0.1))
    with pytest.raises(ValueError, match="unknown kernel"):
        fused_level_loss(M, z, z, torch.tensor([0, 1, 2]), torch.tensor(0.1), kernel="cauchy")


def test_asinh_stable_matches_float64_asinh():
    a = torch.cat([torch.zeros(1), torch.logspace(-30, 15, 2000)])
    ref = torch.asinh(a.double())
    got = asinh_stable(a).double()
    assert torch.allclose(got, ref, rtol=3e-7, atol=0)


def test_negative_offset_shifts_every_negative_logit():
    """``neg_offset = c`` (the sampled-negatives correction) is the reference loss with ``c``
    added to every negative's logit, i.e. with ``D − τ·c`` on the negatives."""
    M = get_manifold("lorentz", K=0.8)
    v1, v2, t, ix, ex = _inputs(7)
    log_tau = torch.tensor(-1.2, dtype=torch.float64, requires_grad=True)
    c = 1.7
    negative = 1.0 - torch.nn.functional.one_hot(t, v2.shape[0]).double()

    def reference():
        D = M.pairwise_dist(M.expmap0(v1), M.expmap0(v2), squared=True)
        tau = log_tau.exp()
        return gwh_infonce(D - tau * c * negative, t, pairwise_km(ix, ex), tau).mean()

    def fused():
        return fused_level_loss(
            M,
            M.expmap0(v1),
            M.expmap0(v2),
            t,
            log_tau.exp(),
            img_xyz=ix,
            ent_xyz=ex,
            lam=1.0,
            sigma_km=1000.0,
            chunk_elems=40,
            max_rows=4,
            neg_offset=c,
        )

    results = []
    for fn in (reference, fused):
        loss = fn()
        results.append([loss.detach(), *torch.autograd.grad(loss, [v1, v2, log_tau])])
    for r, f in zip(*results, strict=True):
        assert torch.allclose(f, r, rtol=1e-10, atol=1e-12)
    plain = fused_level_loss(
        M,
        M.expmap0(v1),
        M.expmap0(v2),
        t,
        log_tau.exp(),
        img_xyz=ix,
        ent_xyz=ex,
        lam=1.0,
        sigma_km=1000.0,
    )
    assert float(results[1][0]) > float(plain.detach())  # a larger denominator, a larger loss
