"""Beam, flat and FAISS-variant search against brute force over every path of small random
trees, on every manifold."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from hierloc.geometry import get_manifold
from hierloc.search import EntityIndex, beam_search, flat_search
from hierloc.search.beam import SERIAL_BELOW

MANIFOLDS = ["lorentz", "euclidean", "sphere"]


def random_tree(manifold: str, counts=(3, 7, 15, 40), d=5, seed=0, squared=True):
    """Random points per level and random parents, every entity with at least one child (as in
    a hierarchy built from images), as an index plus the parent arrays."""
    rng = np.random.default_rng(seed)
    M = get_manifold(manifold, K=0.8 if manifold == "lorentz" else 1.0)
    points = [M.expmap0(torch.from_numpy(rng.normal(size=(n, d)) * 0.5)) for n in counts]  # f64
    parents = []
    for lv in range(1, len(counts)):
        n_up = counts[lv - 1]
        par = np.concatenate([np.arange(n_up), rng.integers(0, n_up, counts[lv] - n_up)])
        parents.append(rng.permutation(par))
    return M, EntityIndex.from_parents(M, points, parents, squared=squared), parents


def brute_force_paths(M, index, parents, z, squared=True):
    """Every root-to-leaf path with its float64 score, per query: ``(paths (P, L), (B, P))``."""
    L = index.levels
    paths = []
    for leaf in range(len(index.points[-1])):
        path = [leaf]
        for lv in range(L - 1, 0, -1):
            path.append(int(parents[lv - 1][path[-1]]))
        paths.append(path[::-1])
    paths = torch.tensor(paths)
    z64 = z.double()
    scores = torch.zeros(len(z), len(paths), dtype=torch.float64)
    for lv in range(L):
        D = M.pairwise_dist(z64, index.points[lv].double(), squared=squared)
        scores -= D[:, paths[:, lv]]
    return paths, scores


@pytest.mark.parametrize("manifold", MANIFOLDS)
@pytest.mark.parametrize("squared", [True, False])
def test_wide_beam_equals_brute_force_over_all_paths(manifold, squared):
    M, index, parents = random_tree(manifold, seed=MANIFOLDS.index(manifold), squared=squared)
    rng = np.random.default_rng(5)
    z = M.expmap0(torch.from_numpy(rng.normal(size=(11, 5)) * 0.5))
    paths, scores = brute_force_paths(M, index, parents, z, squared)
    width = len(index.points[-1])  # ≥ the number of entities of every level
    got = beam_search(index, z, width=width)
    for b in range(len(z)):
        order = scores[b].argsort(descending=True)
        k = len(paths)
        assert torch.equal(got.paths[b, :k], paths[order]), b
        assert torch.allclose(got.scores[b, :k], scores[b, order], rtol=1e-9)
        assert torch.all(got.paths[b, k:] == -1) and torch.all(got.scores[b, k:] == -np.inf)


def test_narrow_beam_only_follows_children_of_the_beam():
    M, index, parents = random_tree("lorentz", seed=3)
    z = M.expmap0(torch.randn(20, 5, generator=torch.Generator().manual_seed(1)))
    got = beam_search(index, z, width=2)
    assert got.paths.shape == (20, 2, 4)
    for b, kk, lv in itertools.product(range(20), range(2), range(1, 4)):
        child = int(got.paths[b, kk, lv])
        assert parents[lv - 1][child] == got.paths[b, kk, lv - 1]
    # width 1 is greedy descent: the best country, then its best child, and so on
    one = beam_search(index, z, width=1)
    for b in range(20):
        node = int(M.pairwise_dist(z[b : b + 1].double(), index.points[0]).argmin())
        assert one.paths[b, 0, 0] == node
        for lv in range(1, 4):
            kids = np.flatnonzero(parents[lv - 1] == node)
            d = M.pairwise_dist(z[b : b + 1].double(), index.points[lv][kids].double())
            node = int(kids[int(d.argmin())])
            assert one.paths[b, 0, lv] == node


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_faiss_variant_equals_the_exact_variant(manifold):
    pytest.importorskip("faiss", reason="the FAISS variant needs faiss-cpu (an extra)")
    M, index, _ = random_tree(manifold, counts=(6, 30, 90, 300), seed=7)
    z = M.expmap0(torch.randn(64, 5, generator=torch.Generator().manual_seed(2)) * 0.5)
    for width in (1, 3, 10):
        a = beam_search(index, z, width=width)
        b = beam_search(index, z, width=width, backend="faiss")
        assert torch.equal(a.paths, b.paths), width
        assert torch.allclose(a.scores, b.scores)


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_flat_search_equals_brute_force_argmin(manifold):
    M, index, _ = random_tree(manifold, seed=11)
    z = M.expmap0(torch.randn(300, 5, generator=torch.Generator().manual_seed(4)) * 0.5)
    got = flat_search(index, z, k=3, chunk=64)
    for lv, res in enumerate(got):
        D = M.pairwise_dist(z.double(), index.points[lv].double(), squared=True)
        want = D.topk(3, dim=1, largest=False).indices
        assert torch.equal(res.paths[:, :, 0], want), lv


def test_bad_trees_are_rejected():
    M = get_manifold("lorentz")
    pts = [M.expmap0(torch.randn(n, 3)) for n in (2, 4)]
    with pytest.raises(ValueError, match="parent ids"):
        EntityIndex.from_parents(M, pts, [np.array([0, 1, 2, 0])])
    with pytest.raises(ValueError, match="beam width"):
        beam_search(EntityIndex.from_parents(M, pts, [np.array([0, 1, 1, 0])]), pts[1], width=0)


def test_reranking_distance_equals_the_geometry_distance_near_and_far():
    """The compiled exact Lorentz distance (precomputed entity norms and radii, query polar
    parts once, one contraction; what the beam's exact scores and the re-ranker use) equals
    :func:`hierloc.geometry.lorentz.dist`, including coincident and very close pairs."""

    M = get_manifold("lorentz", K=0.8)
    g = torch.Generator().manual_seed(0)
    z = M.expmap0(torch.randn(6, 5, generator=g, dtype=torch.float64))
    far = M.expmap0(torch.randn(12, 5, generator=g, dtype=torch.float64) * 2)
    jitter = torch.randn(6, 5, generator=g, dtype=torch.float64) * 1e-9
    near = M.expmap0(M.logmap0(z) + jitter)
    points = torch.cat([far, near, z])  # 12 far, 6 very close (one per query), 6 identical
    index = EntityIndex(M, [points], [], [], squared=False)
    paths = torch.stack([torch.tensor([0, 5, 11, 12 + b, 18 + b]) for b in range(6)])[:, :, None]
    want = M.dist(z[:, None, :].expand(6, 5, -1), points[paths[:, :, 0]])
    got = -index.exact_scores(z, paths)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-15)
    assert torch.all(got[:, -1] == 0) and torch.all(got[:, 3] > 0)


@pytest.mark.parametrize("manifold", ["euclidean", "sphere"])
def test_exact_scores_of_close_pairs_far_out_equal_50_digit_distances(manifold):
    """The compiled exact distances (the beam's final scores) of the flat manifolds come from
    coordinate differences, so that pairs 1e-6 apart at norms of 1e3 (Euclidean) keep their
    digits — the inner-product form would lose them all — and equal 50-digit arithmetic."""
    import mpmath as mp

    M = get_manifold(manifold, K=0.8)
    g = torch.Generator().manual_seed(4)
    scale = 1e3 if manifold == "euclidean" else 1.0
    z = M.project(torch.randn(5, 6, generator=g, dtype=torch.float64) * scale)
    near = M.project(z + torch.randn(5, 6, generator=g, dtype=torch.float64) * 1e-6)
    far = M.project(torch.randn(5, 6, generator=g, dtype=torch.float64) * scale)
    points = torch.cat([near, far])
    index = EntityIndex(M, [points], [], [], squared=False)
    paths = torch.stack([torch.tensor([b, 5 + b]) for b in range(5)])[:, :, None]
    got = -index.exact_scores(z, paths)
    R = mp.sqrt(0.8)
    with mp.workdps(50):
        for b in range(5):
            for t, e in enumerate((b, 5 + b)):
                x = [mp.mpf(float(v)) for v in z[b]]
                y = [mp.mpf(float(v)) for v in points[e]]
                if manifold == "sphere":  # on the sphere of radius R, angles from unit vectors
                    nx, ny = mp.sqrt(sum(v * v for v in x)), mp.sqrt(sum(v * v for v in y))
                    chord = mp.sqrt(sum((a / nx - c / ny) ** 2 for a, c in zip(x, y, strict=True)))
                    want = 2 * R * mp.asin(chord / 2)
                else:
                    want = mp.sqrt(sum((a - c) ** 2 for a, c in zip(x, y, strict=True)))
                assert abs(got[b, t] - float(want)) <= 1e-9 * float(want), (b, t)


@pytest.mark.parametrize("manifold", MANIFOLDS)
def test_single_queries_equal_the_batched_search(manifold):
    """A batch of one runs on the calling thread (interactive use), a large batch across
    numba's threads: the same answers, for every beam width."""
    M, index, _ = random_tree(manifold, counts=(5, 20, 60, 200), seed=13)
    z = M.expmap0(torch.randn(40, 5, generator=torch.Generator().manual_seed(6)) * 0.5)
    assert len(z) >= SERIAL_BELOW
    for width in (1, 4, 10, 300):
        batch = beam_search(index, z, width=width)
        for b in range(len(z)):
            one = beam_search(index, z[b : b + 1], width=width)
            k = one.paths.shape[1]
            assert torch.equal(one.paths[0], batch.paths[b, :k]), (width, b)
            assert torch.allclose(one.scores[0], batch.scores[b, :k], rtol=1e-12)


def _mp_dist2(K, q, h):
    """Squared Lorentz distance in 50-digit arithmetic from the space parts (time coordinates
    recomputed on the hyperboloid): ``d = R·acosh(−<q,h>_L/K)``."""
    import mpmath as mp

    with mp.workdps(50):
        qs = [mp.mpf(float(v)) for v in q[1:]]
        hs = [mp.mpf(float(v)) for v in h[1:]]
        q0 = mp.sqrt(K + sum(v * v for v in qs))
        h0 = mp.sqrt(K + sum(v * v for v in hs))
        x = (q0 * h0 - sum(a * b for a, b in zip(qs, hs, strict=True))) / K
        return mp.sqrt(K) ** 2 * mp.acosh(max(x, mp.mpf(1))) ** 2


def _mp_beam(K, points, parents, q, width):
    """Beam search by hand: at every level every child of the beam scored in 50 digits, the
    ``width`` best prefixes kept (the gap at each cut asserted to be unambiguous)."""
    beams = [((), 0)]
    for lv, pts in enumerate(points):
        cands = []
        for path, score in beams:
            kids = range(len(pts)) if lv == 0 else np.flatnonzero(parents[lv - 1] == path[-1])
            cands += [((*path, int(c)), score - _mp_dist2(K, q, pts[c])) for c in kids]
        cands.sort(key=lambda c: c[1], reverse=True)
        if len(cands) > width:
            assert cands[width - 1][1] - cands[width][1] > 1e-9  # no near-tie at the cut
        beams = cands[:width]
    return beams[0][0]


@pytest.mark.parametrize("width", [2, 3, 5, 10])
def test_pruning_far_from_the_origin_equals_50_digit_beam_search(width):
    """Siblings close together far from the origin (tangent norms 6–9, siblings 1e-4 apart in
    the tangent space: where the float32 acosh form of the inner product loses the ranking):
    every kept prefix must be the one exact arithmetic keeps."""
    rng = np.random.default_rng(7)
    K, d = 0.8, 4
    M = get_manifold("lorentz", K=K)
    counts = (5, 20, 60)
    tangent = [rng.normal(size=(counts[0], d))]
    tangent[0] *= rng.uniform(6, 9, (counts[0], 1)) / np.linalg.norm(tangent[0], axis=1)[:, None]
    parents = []
    for lv in range(1, len(counts)):
        extra = rng.integers(0, counts[lv - 1], counts[lv] - counts[lv - 1])
        par = np.concatenate([np.arange(counts[lv - 1]), extra])
        parents.append(rng.permutation(par))
        tangent.append(tangent[lv - 1][parents[-1]] + rng.normal(size=(counts[lv], d)) * 1e-4)
    points = [M.expmap0(torch.from_numpy(t)).float() for t in tangent]  # stored as float32
    index = EntityIndex.from_parents(M, points, parents)
    leaves = rng.integers(0, counts[-1], 24)
    z = M.expmap0(torch.from_numpy(tangent[-1][leaves] + rng.normal(size=(24, d)) * 5e-5)).float()
    pts64 = [p.double().numpy() for p in points]
    want = [_mp_beam(K, pts64, parents, zq.double().numpy(), width) for zq in z]
    batched = beam_search(index, z, width=width).paths[:, 0].tolist()
    single = [beam_search(index, zq[None], width=width).paths[0, 0].tolist() for zq in z]
    assert [tuple(p) for p in batched] == want
    assert [tuple(p) for p in single] == want


KIND_CASES = [(m, sq) for m in MANIFOLDS for sq in (True, False)]


@pytest.mark.parametrize(("manifold", "squared"), KIND_CASES)
def test_kernel_scores_and_their_inverse_agree_with_the_geometry(manifold, squared):
    """The kernel's scalar score equals the manifold's vectorised ``neg_dist_from_ip``, and
    ``ip_at_least(y)`` is a lower bound of every inner product scoring ``≥ y`` (a wrong
    inverse would let the pruning drop a candidate) that is tight to 1e-9."""
    from hierloc.search import kernels

    M = get_manifold(manifold, K=0.8)
    rng = np.random.default_rng(3)
    scale = 0.5 if manifold == "sphere" else 1.5  # within the sphere's expmap0 cap
    z = M.expmap0(torch.from_numpy(rng.normal(size=(50, 4)) * scale))
    x = M.expmap0(torch.from_numpy(rng.normal(size=(50, 4)) * scale))
    q = M.search_vectors(z, "query")
    ip = (q * M.search_vectors(x, "database")).sum(-1).numpy()
    extra = M.search_extra(z)
    extra = np.zeros(50) if extra is None else extra.numpy()
    want = M.neg_dist_from_ip(torch.from_numpy(ip), squared, torch.from_numpy(extra)).numpy()
    kind, K = M.search_form, 0.8
    got = np.array(
        [kernels.neg_dist(u, kind, K, squared, e) for u, e in zip(ip, extra, strict=True)]
    )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    for u, y, e in zip(ip, got, extra, strict=True):
        t = kernels.ip_at_least(y, kind, K, squared, e)
        assert t <= u and t >= u - 1e-9 * (abs(u) + 1), (u, y, t)


def test_float32_inner_products_stay_within_the_kernels_bound():
    """``|ip₃₂ − ip| ≤ c·|q|·|v|`` with the kernel's constant, against exactly rounded sums
    (``math.fsum``) on same-sign products (the rounding errors add up; a bound for float32
    inputs alone, ``2u``, fails here by ×1.3–6) with norms up to 1e4 — the bound every
    pruning decision rests on."""
    import math

    from hierloc.search import kernels

    rng = np.random.default_rng(11)
    for dim in (3, 17, 129, 513):
        c = kernels.error_constant(dim)
        q = rng.normal(size=(200, dim)) * 10.0 ** rng.uniform(-2, 4, (200, 1))
        v = q * rng.uniform(0.5, 1.5, (200, dim))
        q32, v32 = q.astype(np.float32), v.astype(np.float32)
        worst = 0.0
        for i in range(200):
            got = kernels._dot32(q32, i, v32, i)
            exact = math.fsum(q[i] * v[i])
            bound = c * np.linalg.norm(q[i]) * np.linalg.norm(v[i])
            worst = max(worst, abs(got - exact) / bound)
        assert worst <= 1.0, (dim, worst)
        assert worst > 0.01, (dim, worst)  # and not vacuous


def test_pruning_far_from_the_origin_scores_undecided_candidates_exactly():
    """Where float32 cannot separate siblings (tangent norms 6–9, siblings 1e-4 apart) the
    kernel scores more than the beam's worth of candidates exactly; near the origin it
    scores about the beam alone — the fallback is what keeps the far case exact."""
    from hierloc.search.beam import beam_compiled

    rng = np.random.default_rng(7)
    M = get_manifold("lorentz", K=0.8)
    for scale, expect_more in ((7.5, True), (0.3, False)):
        t0 = rng.normal(size=(5, 4))
        t0 *= scale / np.linalg.norm(t0, axis=1)[:, None]
        par = np.concatenate([np.arange(5), rng.integers(0, 5, 35)])
        t1 = t0[par] + rng.normal(size=(40, 4)) * (1e-4 if expect_more else 0.2)
        pts = [M.expmap0(torch.from_numpy(t)).float() for t in (t0, t1)]
        index = EntityIndex.from_parents(M, pts, [par])
        z = M.expmap0(torch.from_numpy(t1[:8] + rng.normal(size=(8, 4)) * 5e-5)).float()
        _, _, stats = beam_compiled(index, z, width=3)
        exact_per_query = stats[:, 1, 1].mean()
        assert (exact_per_query > 6) == expect_more, exact_per_query
