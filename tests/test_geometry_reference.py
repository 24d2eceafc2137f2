"""Reference equivalence: our Lorentz ops vs geoopt, and FAISS inner-product search vs exact
float64 distances on every manifold's ``search_vectors``.

geoopt clamps internally (``<u,u>_L`` at 1e-8, ``arcosh`` argument² − 1 at 1e-15) and uses the
ill-conditioned ``arcosh`` form, so parity is checked where geoopt itself is exact to float64:
tangent norms in [1e-2, 8] and pairs at distance > 0.05 whose arcosh form is well conditioned.
"""

from __future__ import annotations

import faiss
import geoopt
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hierloc.geometry import available_manifolds, get_manifold
from hierloc.geometry import lorentz as L

RTOL = 1e-10


def _geoopt(K: float) -> geoopt.Lorentz:
    # k as a float64 tensor: geoopt.Lorentz(k=0.8) stores float32(0.8) = 0.80000001192...
    return geoopt.Lorentz(k=torch.tensor(K, dtype=torch.float64))


def _pad(v: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros_like(v[..., :1]), v], dim=-1)


@st.composite
def tangent_pair(draw, n=6):
    """Two batches ``(n, d)`` of tangent vectors with norms log-uniform in [1e-2, 8]."""
    d = draw(st.integers(1, 10))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    direction = torch.randn(2, n, d, generator=g, dtype=torch.float64)
    log_norm = torch.rand(2, n, 1, generator=g, dtype=torch.float64) * (np.log10(8) + 2) - 2
    v = direction / direction.norm(dim=-1, keepdim=True) * 10**log_norm
    return v[0], v[1]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp(min=1e-300)).max())


@settings(max_examples=50, deadline=None)
@given(vw=tangent_pair(), K=st.sampled_from([0.1, 0.5, 0.8, 1.0, 2.5]))
def test_parity_with_geoopt_float64(vw, K):
    v, w = vw
    G = _geoopt(K)
    x, y = L.expmap0(v, K), L.expmap0(w, K)
    gx = G.expmap0(_pad(v))
    # expmap0: every coordinate (geoopt's time coordinate of the tangent is 0 by construction)
    assert torch.allclose(x, gx, rtol=RTOL, atol=0)
    # logmap0: geoopt returns an ambient tangent vector whose time part is ~0
    glog = G.logmap0(x)
    assert float(glog[..., 0].abs().max()) < 1e-12 * float(x[..., 0].max())
    assert _rel(L.logmap0(x, K), glog[..., 1:]) < RTOL
    # inner
    assert _rel(L.inner(x, y), G.inner(x, x, y)) < RTOL  # geoopt: inner(point, u, v)
    # dist, on pairs where the arcosh form is well conditioned: its relative error is about
    # eps·κ with κ = x0·y0 / (K·sinh(d/R)·d/R); beyond that geoopt, not we, is off
    gd = G.dist(x, y)
    R = K**0.5
    kappa = x[:, 0] * y[:, 0] / (K * torch.sinh(gd / R) * (gd / R))
    far = (gd > 0.05) & (kappa < 1e4)
    assume(bool(far.any()))
    assert _rel(L.dist(x, y, K)[far], gd[far]) < RTOL
    assert _rel(L.pairwise_dist(x, y, K).diagonal()[far], gd[far]) < 1e-9


def _faiss_topk(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    _, ids = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return ids


@pytest.mark.parametrize("name", available_manifolds())
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faiss_flat_ip_on_search_vectors_ranks_like_exact_distances(name, seed):
    """Tie-aware: FAISS's k results must be k nearest in exact float64 distance, i.e. each
    returned distance equals the true i-th smallest distance within float32 resolution."""
    M = get_manifold(name)
    g = torch.Generator().manual_seed(seed)
    d, n_db, n_q, k = 16, 3000, 64, 10
    db = M.expmap0(torch.randn(n_db, d, generator=g, dtype=torch.float64) * 0.4)
    q = M.expmap0(torch.randn(n_q, d, generator=g, dtype=torch.float64) * 0.4)
    # near-duplicates and exact duplicates make ties
    db[1:50] = db[0]
    db[50:100] = M.expmap0(M.logmap0(db[50:100]) + 1e-9)
    ids = _faiss_topk(
        M.search_vectors(q, "query").numpy(), M.search_vectors(db, "database").numpy(), k
    )
    exact = M.pairwise_dist(q, db).numpy()  # float64
    true_sorted = np.sort(exact, axis=1)[:, :k]
    got = np.take_along_axis(exact, ids, axis=1)
    assert np.allclose(np.sort(got, axis=1), true_sorted, rtol=1e-5, atol=1e-6)
    # and FAISS orders its results by distance (up to ties)
    assert np.all(np.diff(got, axis=1) >= -1e-5)
