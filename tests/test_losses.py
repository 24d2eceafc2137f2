"""GWH-InfoNCE against hand-written references (papers.md formulas, brute force)."""

from __future__ import annotations

import math

import pytest
import torch

from hierloc.geo import haversine_km
from hierloc.losses import GWHInfoNCE, LossConfig, gwh_infonce, infonce, log_kernel


def test_lambda_zero_is_plain_infonce():
    g = torch.Generator().manual_seed(0)
    d = torch.rand(6, 9, generator=g, dtype=torch.float64) * 4
    t = torch.randint(0, 9, (6,), generator=g)
    km = torch.rand(6, 9, generator=g, dtype=torch.float64) * 5000
    tau = 0.1
    ref = torch.tensor(
        [
            -math.log(math.exp(-d[b, t[b]] / tau) / sum(math.exp(-d[b, k] / tau) for k in range(9)))
            for b in range(6)
        ],
        dtype=torch.float64,
    )
    assert torch.allclose(gwh_infonce(d, t, km, tau, lam=0.0), ref, rtol=1e-12)
    assert torch.allclose(infonce(d, t, tau), ref, rtol=1e-12)


@pytest.mark.parametrize("kernel", ["laplace", "gauss", "inverse"])
def test_kernels_match_their_formulas(kernel):
    u = torch.linspace(0, 7, 50, dtype=torch.float64)
    formula = {"laplace": torch.exp(-u), "gauss": torch.exp(-(u**2)), "inverse": (1 + u) ** -2.5}[
        kernel
    ]
    assert torch.allclose(log_kernel(u, kernel, p=2.5).exp(), formula, rtol=1e-12)
    with pytest.raises(ValueError, match="Did you mean 'gauss'"):
        log_kernel(u, "gaus")


def brute_force(d, t, km, tau, lam, sigma, kernel="laplace"):
    """The paper's formula, term by term, with Python loops."""
    k = {
        "laplace": lambda u: math.exp(-u),
        "gauss": lambda u: math.exp(-u * u),
        "inverse": lambda u: (1 + u) ** -1.0,
    }[kernel]
    out = []
    for b in range(d.shape[0]):
        pos = math.exp(-float(d[b, t[b]]) / tau)
        neg = sum(
            (1 + lam * k(float(km[b, j]) / sigma)) * math.exp(-float(d[b, j]) / tau)
            for j in range(d.shape[1])
            if j != t[b]
        )
        out.append(-math.log(pos / (pos + neg)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kernel", ["laplace", "gauss", "inverse"])
def test_two_level_toy_tree_equals_brute_force(kernel):
    # 3 countries, 5 regions (parents 0,0,1,2,2); 4 images with real coordinates
    g = torch.Generator().manual_seed(1)
    img = torch.tensor(
        [[48.85, 2.35], [40.7, -74.0], [35.7, 139.7], [-33.9, 151.2]], dtype=torch.float64
    )
    ent = [
        torch.tensor([[46.0, 2.0], [39.0, -98.0], [36.0, 138.0]], dtype=torch.float64),
        torch.tensor(
            [[48.8, 2.3], [43.3, 5.4], [40.7, -74.0], [35.7, 139.7], [34.7, 135.5]],
            dtype=torch.float64,
        ),
    ]
    targets = [torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 3, 4])]
    dists = [torch.rand(4, len(e), generator=g, dtype=torch.float64) * 2 for e in ent]
    km = [haversine_km(img[:, None, 0], img[:, None, 1], e[None, :, 0], e[None, :, 1]) for e in ent]
    cfg = LossConfig(
        kernel=kernel, lam=1.5, sigma_km=800.0, p=1.0, tau_init=0.2, level_weights=(0.5, 2.0)
    )
    loss = GWHInfoNCE(cfg).double()
    total, per_level = loss(dists, targets, km)
    # the module stores its scalars as log-parameters: use the values it actually holds
    tau, lam, sigma = (float(v.detach()) for v in (loss.tau, loss.lam, loss.sigma_km))
    assert tau == pytest.approx(0.2, rel=1e-6) and lam == pytest.approx(1.5, rel=1e-6)
    refs = [
        brute_force(d**2, t, k, tau, lam, sigma, kernel).mean()
        for d, t, k in zip(dists, targets, km, strict=True)
    ]
    for got, ref in zip(per_level, refs, strict=True):
        assert float(got.detach()) == pytest.approx(float(ref), rel=1e-10)
    expected = 0.5 * float(refs[0]) + 2.0 * float(refs[1])
    assert float(total.detach()) == pytest.approx(expected, rel=1e-10)


def test_gradients_finite_for_coincident_points():
    loss = GWHInfoNCE()
    d = torch.zeros(3, 4, requires_grad=True)  # image on top of every entity
    km = torch.zeros(3, 4)  # and at the same place
    total, _ = loss([d], [torch.tensor([0, 1, 2])], [km])
    total.backward()
    assert torch.isfinite(d.grad).all() and torch.isfinite(loss.log_tau.grad)


def test_learnable_lambda_collapses_to_infonce():
    """Minimising the loss in λ always shrinks λ: larger weights only grow the denominator."""
    g = torch.Generator().manual_seed(2)
    loss = GWHInfoNCE(LossConfig(learnable=True, lam=1.0))
    opt = torch.optim.SGD([loss.log_lam, loss.log_sigma], lr=0.5)
    history = []
    for _ in range(200):
        d = torch.rand(16, 20, generator=g) * 3
        km = torch.rand(16, 20, generator=g) * 3000
        t = torch.randint(0, 20, (16,), generator=g)
        total, _ = loss([d], [t], [km])
        opt.zero_grad()
        total.backward()
        assert loss.log_lam.grad.item() > 0  # every step pushes λ down
        opt.step()
        history.append(loss.lam.detach().item())
    assert all(b < a for a, b in zip(history, history[1:], strict=False))
    assert history[-1] < 0.2  # from 1.0, and still falling
    fixed = GWHInfoNCE(LossConfig(learnable=False))
    assert not any(n in ("log_lam", "log_sigma") for n, _ in fixed.named_parameters())
    assert fixed.lam.detach().item() == pytest.approx(1.0)


def test_tau_is_clamped():
    loss = GWHInfoNCE(LossConfig(tau_min=0.05, tau_max=0.5))
    with torch.no_grad():
        loss.log_tau.fill_(math.log(1e-4))
    assert loss.tau.detach().item() == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"loss='triplet': one of \['gwh', 'infonce'\]"):
        GWHInfoNCE(LossConfig(loss="triplet"))
