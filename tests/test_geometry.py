"""Property tests of the manifolds (hypothesis), float64 and float32.

Tolerances (relative unless said): float64 1e-12, float32 2e-5 for round trips and
``dist(o, exp_o(v)) == |v|``; on-manifold ``|<x,x>_L + K| <= tol·x0²`` (the cancellation in
the Lorentz form grows with ``x0²``); the triangle inequality with slack ``tol·(sum of sides)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hierloc.errors import ManifoldOverflowError
from hierloc.geometry import available_manifolds, get_manifold
from hierloc.geometry import lorentz as L

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}
SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def tangent(draw, dtype, max_norm: float, min_log10: float = -6.0, dim=None):
    """A tangent vector ``(d,)`` with norm log-uniform in ``[10^min_log10, max_norm]``."""
    d = dim if dim is not None else draw(st.integers(1, 8))
    direction = np.array(draw(st.lists(st.floats(-1, 1), min_size=d, max_size=d)))
    assume(np.linalg.norm(direction) > 1e-3)
    log_norm = draw(st.floats(min_log10, math.log10(max_norm)))
    v = direction / np.linalg.norm(direction) * 10.0**log_norm
    return torch.tensor(v, dtype=dtype)


def manifold_cases():
    return [(name, dtype) for name in available_manifolds() for dtype in DTYPES]


def _max_norm(M, dtype, fraction=1.0):
    r = M.r_max(dtype)
    return 50.0 if math.isinf(r) else r * fraction


@pytest.mark.parametrize("name,dtype", manifold_cases())
@SETTINGS
@given(data=st.data())
def test_round_trip_and_distance_to_origin(name, dtype, data):
    M = get_manifold(name)
    # the sphere's log is ill-conditioned right at the antipode (direction of a tiny x⃗)
    frac = 0.99 if name == "sphere" else 1.0
    v = data.draw(tangent(dtype, _max_norm(M, dtype, frac)))
    x = M.expmap0(v)
    assert x.dtype == dtype and torch.isfinite(x).all()
    back = M.logmap0(x)
    tol = TOL[dtype] * (50 if name == "sphere" and dtype == torch.float32 else 1)
    err = (back - v).norm() / v.norm()
    assert err <= tol, f"round trip relative error {err:.3g} for |v|={float(v.norm()):.3g}"
    d0 = M.dist0(x)
    assert abs(float(d0) - float(v.norm())) <= tol * float(v.norm())
    o = M.origin(v.shape[-1], dtype=dtype)
    assert abs(float(M.dist(o, x)) - float(v.norm())) <= tol * float(v.norm()) * 10


@pytest.mark.parametrize("dtype", DTYPES)
@SETTINGS
@given(data=st.data(), K=st.sampled_from([0.1, 0.8, 2.0]))
def test_points_lie_on_the_manifold(dtype, data, K):
    v = data.draw(tangent(dtype, 15.0 * K**0.5))
    x = L.expmap0(v, K=K)
    lhs = float(L.inner(x, x))
    assert abs(lhs + K) <= 4 * TOL[dtype] * float(x[0]) ** 2
    # project() keeps a point on the manifold where it was
    assert torch.allclose(L.project(x, K), x, rtol=TOL[dtype] * 4, atol=0)

    S = get_manifold("sphere", K=K)
    y = S.expmap0(v, overflow="clip")
    assert float((y * y).sum()) == pytest.approx(K, rel=4 * TOL[dtype])
    assert torch.allclose(S.project(y), y, rtol=TOL[dtype] * 4, atol=TOL[dtype])


@pytest.mark.parametrize("name,dtype", manifold_cases())
def test_zero_vector_maps_to_origin_and_back(name, dtype):
    M = get_manifold(name)
    v = torch.zeros(2, 5, dtype=dtype)
    x = M.expmap0(v)
    assert torch.equal(x, M.origin(5, dtype=dtype).expand_as(x))
    assert torch.equal(M.logmap0(x), v)
    assert torch.equal(M.dist0(x), torch.zeros(2, dtype=dtype))


@pytest.mark.parametrize("name,dtype", manifold_cases())
@SETTINGS
@given(data=st.data())
def test_symmetry_identity_and_triangle(name, dtype, data):
    M = get_manifold(name)
    d = data.draw(st.integers(1, 6))
    cap = min(_max_norm(M, dtype, 0.9), 8.0)
    x, y, z = (M.expmap0(data.draw(tangent(dtype, cap, -3, dim=d))) for _ in range(3))
    dxy, dyx = M.dist(x, y), M.dist(y, x)
    assert torch.isfinite(dxy)
    assert float(dxy) == pytest.approx(float(dyx), rel=TOL[dtype], abs=0)
    assert float(M.dist(x, x)) == 0.0
    dxz, dzy = M.dist(x, z), M.dist(z, y)
    slack = 10 * TOL[dtype] * float(dxz + dzy + dxy) + 1e-6 * (dtype == torch.float32)
    assert float(dxy) <= float(dxz + dzy) + slack


@pytest.mark.parametrize("name,dtype", manifold_cases())
def test_pairwise_matches_elementwise(name, dtype):
    M = get_manifold(name)
    g = torch.Generator().manual_seed(0)
    x = M.expmap0(torch.randn(7, 5, generator=g, dtype=dtype) * 0.5)
    y = M.expmap0(torch.randn(11, 5, generator=g, dtype=dtype) * 0.5)
    P = M.pairwise_dist(x, y)
    E = M.dist(x[:, None, :], y[None, :, :])
    assert P.shape == (7, 11)
    assert torch.allclose(P, E, rtol=1e-4 if dtype == torch.float32 else 1e-10, atol=0)
    assert torch.allclose(M.pairwise_dist(x, y, squared=True), E**2, rtol=2e-4, atol=0)


@pytest.mark.parametrize("name,dtype", manifold_cases())
def test_gradients_finite_at_coincident_points_zero_vector_and_cap(name, dtype):
    M = get_manifold(name)
    v = torch.zeros(3, 4, dtype=dtype, requires_grad=True)
    x = M.expmap0(v)
    (M.dist(x, x).sum() + M.dist0(x).sum() + M.logmap0(x).sum()).backward()
    assert torch.isfinite(v.grad).all()

    w = torch.randn(3, 4, dtype=dtype)
    w = (w / w.norm(dim=-1, keepdim=True) * min(M.r_max(dtype) * 0.999, 30.0)).requires_grad_()
    p = M.expmap0(w)
    q = p.detach().clone().requires_grad_()
    (M.dist(p, q).sum() + M.pairwise_dist(p, q).sum() + M.logmap0(p).sum()).backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(q.grad).all()


@pytest.mark.parametrize("name", ["lorentz", "sphere"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_above_cap_raises_by_default_and_clip_rescales(name, dtype):
    M = get_manifold(name)
    cap = M.r_max(dtype)
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=dtype)
    v[0] *= 2 * cap / 5  # norm 2·cap
    with pytest.raises(ManifoldOverflowError, match="r_max"):
        M.expmap0(v)
    x = M.expmap0(v, overflow="clip")
    assert torch.isfinite(x).all()
    back = M.logmap0(x)
    # clipped row: direction kept, norm == r_max; untouched row: unchanged
    assert float(back[0].norm()) == pytest.approx(cap, rel=1e-3)
    assert torch.allclose(
        back[0] / back[0].norm(), torch.tensor([0.6, 0.8], dtype=dtype), atol=1e-3
    )
    assert torch.allclose(back[1], v[1], rtol=TOL[dtype] * 10)
    # a finite input whose squared norm overflows still clips to a finite point
    huge = torch.tensor([[3e30, 4e30]], dtype=torch.float32)
    assert torch.isfinite(M.expmap0(huge, overflow="clip")).all()
    with pytest.raises(ValueError, match="overflow must be"):
        M.expmap0(v, overflow="silent")


def test_lorentz_caps_are_documented_values():
    assert L.r_max(0.8, torch.float32) == pytest.approx(40 * math.sqrt(0.8))
    assert L.r_max(0.8, torch.float64) == pytest.approx(300 * math.sqrt(0.8))


def test_half_inputs_are_computed_in_float32():
    v = torch.randn(4, 3).half()
    x = L.expmap0(v)
    assert x.dtype == torch.float32
    assert torch.allclose(x, L.expmap0(v.float()))


def test_close_pairs_float32_relative_error_small():
    """The stable form keeps relative precision on close pairs where arcosh collapses."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(64, 8, generator=g, dtype=torch.float64)
    w = v + 1e-4 * torch.randn(64, 8, generator=g, dtype=torch.float64)
    x64, y64 = L.expmap0(v), L.expmap0(w)
    exact = L.dist(x64, y64)
    approx = L.dist(x64.float(), y64.float()).double()
    rel = ((approx - exact).abs() / exact).max()
    assert rel < 1e-3, f"float32 relative error {rel:.3g} on close pairs"


def test_get_manifold_registry_and_errors():
    assert get_manifold("Lorentz").K == pytest.approx(0.8)
    assert get_manifold("lorentz", K=1.5).K == 1.5
    assert get_manifold("euclidean").ambient_dim(5) == 5
    assert get_manifold("sphere").ambient_dim(5) == 6
    with pytest.raises(ValueError, match="Did you mean 'lorentz'"):
        get_manifold("lorenz")
    with pytest.raises(ValueError, match="K must be > 0"):
        get_manifold("lorentz", K=0)
    with pytest.raises(ValueError, match="role"):
        get_manifold("lorentz").search_vectors(torch.zeros(1, 3), "key")
