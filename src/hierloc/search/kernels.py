"""Compiled (numba) kernels of the beam search and of the exact re-scoring of its final paths.

Beam search touches about 800 child vectors per query (HierLoc's four levels, beam 10): its
cost is memory and bookkeeping, not arithmetic. The kernel runs one query at a time over the
whole hierarchy (the batch split across threads), reads each beam's children as one contiguous
slice of a float32 copy of the level's vectors stored in children order, and keeps the top-k
with insertion into a ``width``-long list — no gathers, padding or per-level Python.

Exactness: each candidate's float32 inner product has a rigorous error bound ``e = c·|q|·|v|``
(:func:`error_constant`), so its path score lies in ``[parent + s(ip − e), parent + s(ip + e)]``
for the manifold's score ``s`` (increasing in the inner product — larger is closer, by
construction of the search vectors). Only candidates whose upper bound reaches the
``width``-th best lower bound can be among the ``width`` best; those, and only those, are
scored exactly in float64 (:func:`exact_dist`: each manifold's stable form — Lorentz the polar
form of ``lorentz.dist``, no cancellation far from the origin; Euclidean and sphere
from coordinate differences) — and the beam is chosen by the exact scores. Every level keeps
exactly the beam exact arithmetic keeps (up to float64 rounding), and the final beam's scores
are its exact scores, for every manifold: no re-rank follows.

The score form is the manifold's ``search_form`` (``SEARCH_FORM`` of its geometry module): 0
Lorentz (``ip = −K·cosh(d/R)``), 1 Euclidean (``ip = (|q|² − |q−y|²)/2``), 2 sphere
(``ip = cos(d/R)``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

U32, U64 = 2.0**-24, 2.0**-53
TINY = float(np.finfo(np.float64).tiny)
_FAST = {"reassoc", "contract"}  # let LLVM vectorise the reductions (any order: same bound)


def error_constant(dim: int) -> float:
    """``c`` of the bound ``|ip₃₂ − ip| ≤ c·Σ|qᵢvᵢ| ≤ c·|q|·|v|`` for ``dim``-long vectors: both
    inputs rounded to float32 (``2u``), the products summed in float32 in any order
    (``γ_dim ≈ dim·u``, Higham's bound), and the float64 reference's own summation error; 1 %
    headroom."""
    return 1.01 * ((dim + 2) * U32 + 2 * (dim + 1) * U64)


@intrinsic
def _prefetch(typingctx, arr, i, j):
    """Ask the CPU to start loading ``arr[i, j]``'s cache line (LLVM's ``prefetch``: read,
    keep in all cache levels); no effect on results."""

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1], args[2]], wraparound=False
        )
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        flags = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        builder.call(fn, [builder.bitcast(ptr, i8p), *flags])
        return context.get_dummy_value()

    return types.void(arr, i, j), codegen


@nb.njit(inline="always")
def _prefetch_row(m, row):
    """Prefetch every cache line of row ``m[row]``."""
    step = 64 // m.itemsize
    for j in range(0, m.shape[1], step):
        _prefetch(m, row, j)


@nb.njit(inline="always")
def neg_dist(ip, kind, K, squared, extra):
    """``−D`` from a search-vector inner product — the scalar form of each manifold's
    ``neg_dist_from_ip`` (``hierloc.geometry``), tested equal to it."""
    if kind == 0:  # Lorentz: ip = <q, x>_L = −K·cosh(d/R)
        x = max(ip * (-1.0 / K), 1.0)
        d = math.log(x + math.sqrt(x * x - 1.0)) * math.sqrt(K)
    elif kind == 1:  # Euclidean: ip = (|q|² − |q−y|²)/2, extra = |q|²
        d2 = max(extra - 2.0 * ip, 0.0)
        return -d2 if squared else -math.sqrt(d2)
    else:  # sphere: ip = cos(d/R)
        d = math.acos(min(max(ip, -1.0), 1.0)) * math.sqrt(K)
    return -(d * d) if squared else -d


@nb.njit(inline="always")
def ip_at_least(y, kind, K, squared, extra):
    """A lower bound on the smallest inner product ``u`` with ``neg_dist(u) ≥ y`` (the inverse
    of the increasing :func:`neg_dist`, lowered by a relative 1e-12 so that rounding can only
    let more candidates through): ``−inf`` when every ``u`` qualifies, ``+inf`` when none."""
    if y > 0.0:
        return np.inf
    d = math.sqrt(-y) if squared else -y
    if kind == 0:
        u = -K * math.cosh(d / math.sqrt(K))
    elif kind == 1:
        u = 0.5 * (extra - d * d)
    else:
        a = d / math.sqrt(K)
        if a >= math.pi:
            return -np.inf
        u = math.cos(a)
    return u - 1e-12 * (abs(u) + 1.0)


@nb.njit(inline="always")
def _dot32(a, qi, m, row):
    """``a[qi]·m[row]`` of float32 rows in float32 (rows indexed in place: a slice would cost
    an array object per call; inlined into the kernel, which lets LLVM vectorise it)."""
    s = np.float32(0.0)
    for i in range(a.shape[1]):
        s += a[qi, i] * m[row, i]
    return np.float64(s)


@nb.njit(inline="always")
def _insert(val, vals, ids, slots, cnt, cap, i_new, s_new):
    """Insert ``val`` into the descending list ``vals[:cnt]`` (capacity ``cap``; ties keep
    the earlier entry first); returns the new count."""
    if cnt == cap:
        if not val > vals[cap - 1]:
            return cnt
        i = cap - 1
    else:
        i = cnt
        cnt += 1
    while i > 0 and vals[i - 1] < val:
        vals[i] = vals[i - 1]
        ids[i] = ids[i - 1]
        slots[i] = slots[i - 1]
        i -= 1
    vals[i] = val
    ids[i] = i_new
    slots[i] = s_new
    return cnt


@nb.njit(fastmath=_FAST)
def _lorentz_pair(q, b, nz, sz, v, row, hn, ht, K):
    """The Lorentz distance from query ``q[b]`` (space norm ``nz``, radius ``sz = asinh(nz/R)``)
    to entity ``v[row]`` (space norm ``hn``, radius ``ht``) in float64, the stable polar form
    of ``lorentz.dist``: ``|x−y|_L² = 4K·sinh²((s−t)/2) + |x⃗||y⃗|·|x̂−ŷ|²``, ``d = 2R·asinh(
    |x−y|_L/2R)``, with ``|x̂−ŷ|² = 2 − 2·x̂·ŷ`` — or, for directions closer than 1e-3, the
    difference form (no cancellation). Time coordinates are not read."""
    dot = 0.0
    for i in range(1, q.shape[1]):
        dot += v[row, i] * q[b, i]
    chord2 = max(2.0 - 2.0 * dot / (hn * nz), 0.0)
    if chord2 < 1e-6:
        chord2 = 0.0
        for i in range(1, q.shape[1]):
            df = q[b, i] / nz - v[row, i] / hn
            chord2 += df * df
    sh = math.sinh((sz - ht) / 2)
    R = math.sqrt(K)
    return 2 * R * math.asinh(math.sqrt(4 * K * sh * sh + nz * hn * chord2) / (2 * R))


@nb.njit(inline="always")
def _query_polar(q, b, K):
    """Space norm and radius of query ``q[b]`` (Lorentz)."""
    nz = 0.0
    for i in range(1, q.shape[1]):
        nz += q[b, i] * q[b, i]
    nz = math.sqrt(max(nz, TINY))
    return nz, math.asinh(nz / math.sqrt(K))


@nb.njit(inline="always")
def exact_dist(q, b, nz, sz, v, row, hn, ht, kind, K):
    """The float64 distance from query ``q[b]`` to ``v[row]`` (search vectors) in each
    manifold's stable form: Lorentz the polar form (:func:`_lorentz_pair`; ``nz``, ``sz`` the
    query's, ``hn``, ``ht`` the entity's space norm and radius); Euclidean ``|q − y|`` from
    the difference of the first ``D − 1`` coordinates (the last is the search's lift);
    sphere ``2R·asin(|q̂ − ŷ|/2)`` from the difference of the unit vectors."""
    if kind == 0:
        return _lorentz_pair(q, b, nz, sz, v, row, hn, ht, K)
    n = q.shape[1] - 1 if kind == 1 else q.shape[1]
    s = 0.0
    for i in range(n):
        df = q[b, i] - v[row, i]
        s += df * df
    if kind == 1:
        return math.sqrt(s)
    return 2.0 * math.sqrt(K) * math.asin(min(math.sqrt(s) * 0.5, 1.0))


@nb.njit(fastmath=_FAST)
def _search_range(lo_q, hi_q, q32, q64, qnorm, extra, width, depth, kind, K, squared, c_err, pk):
    """Beam search of queries ``lo_q … hi_q − 1`` (``pk``: the index's packed arrays, see
    ``EntityIndex.packed``); per query and level: every child of the beam scored in float32
    with its bound, the ``width``-th best lower bound ``cut``, the candidates whose upper bound
    reaches it scored exactly, the ``width`` best kept. Level 0 is the children of a virtual
    root. Writes ``paths``, ``scores``, ``n_out``, ``stats`` (the last four of ``pk``)."""
    (
        v32,
        vnorm,
        v64,
        perm,
        off,
        ptr,
        ptr_off,
        norms,
        radii,
        max_cand,
        paths,
        scores,
        n_out,
        stats,
    ) = pk
    hi = np.empty(max_cand)
    cpos = np.empty(max_cand, np.int64)
    cslot = np.empty(max_cand, np.int64)
    top_lo = np.empty(width)
    own_lo = np.empty(width)
    dummy = np.empty(width, np.int64)
    bid, nid = np.empty(width, np.int64), np.empty(width, np.int64)
    bsc, nsc = np.empty(width), np.empty(width)
    nslot = np.empty(width, np.int64)
    need = np.empty(width)
    bpath, npath = np.empty((width, depth), np.int64), np.empty((width, depth), np.int64)
    for b in range(lo_q, hi_q):
        qn, ex = qnorm[b], extra[b]
        nz, sz = _query_polar(q64, b, K) if kind == 0 else (0.0, 0.0)
        nbm = 1
        bid[0] = 0
        bsc[0] = 0.0
        for lv in range(depth):
            base, pb = off[lv], ptr_off[lv]
            n = 0
            ntop = 0
            for s in range(nbm):
                p, ps = bid[s], bsc[s]
                # only candidates with ip − e ≥ enter can put their lower bound in the list
                enter = -np.inf
                if ntop == width:
                    enter = ip_at_least(top_lo[ntop - 1] - ps, kind, K, squared, ex)
                m = 0  # the parent's best lower bounds, kept as inner products (no score yet)
                for pos in range(ptr[pb + p], ptr[pb + p + 1]):
                    row = base + pos
                    ip = _dot32(q32, b, v32, row)
                    e = c_err * qn * vnorm[row]
                    hi[n] = ip + e
                    cpos[n] = pos
                    cslot[n] = s
                    n += 1
                    if ip - e >= enter:
                        m = _insert(ip - e, own_lo, dummy, dummy, m, width, 0, 0)
                        if m == width:  # below its own width-th, a child cannot enter either
                            enter = max(enter, own_lo[m - 1])
                for t in range(m):  # scored best first: the first that cannot enter ends it
                    lo = ps + neg_dist(own_lo[t], kind, K, squared, ex)
                    if ntop == width and not lo > top_lo[ntop - 1]:
                        break
                    ntop = _insert(lo, top_lo, dummy, dummy, ntop, width, 0, 0)
            stats[b, lv, 0] = n
            if n == 0:  # no children (not in hierarchies built from images)
                nbm = 0
                break
            cut = top_lo[ntop - 1]  # ≤ the width-th best exact score
            cut -= 1e-12 * (abs(cut) + 1.0)  # the exact forms' own rounding
            for s in range(nbm):  # per parent: the inner product an upper bound must reach
                need[s] = ip_at_least(cut - bsc[s], kind, K, squared, ex)
            refined = 0
            for j in range(n):  # the candidates to score exactly; their float64 rows loaded
                if hi[j] >= need[cslot[j]]:
                    cpos[refined] = cpos[j]
                    cslot[refined] = cslot[j]
                    refined += 1
                    _prefetch_row(v64, base + perm[base + cpos[j]])
            nk = 0
            for j in range(refined):
                s = cslot[j]
                cid = perm[base + cpos[j]]
                row = base + cid
                d = exact_dist(q64, b, nz, sz, v64, row, norms[row], radii[row], kind, K)
                sc = bsc[s] - (d * d if squared else d)
                nk = _insert(sc, nsc, nid, nslot, nk, width, cid, s)
            stats[b, lv, 1] = refined
            for t in range(nk):
                for u in range(lv):
                    npath[t, u] = bpath[nslot[t], u]
                npath[t, lv] = nid[t]
            bid, nid = nid, bid
            bsc, nsc = nsc, bsc
            bpath, npath = npath, bpath
            nbm = nk
        n_out[b] = nbm
        for t in range(nbm):
            scores[b, t] = bsc[t]
            for u in range(depth):
                paths[b, t, u] = bpath[t, u]


@nb.njit(parallel=True, cache=True)
def beam_parallel(chunks, q32, q64, qnorm, extra, width, depth, kind, K, squared, c_err, pk):
    """:func:`_search_range` over the batch in ``chunks`` pieces across numba's threads."""
    B = q32.shape[0]
    for c in nb.prange(chunks):
        lo, hi = c * B // chunks, (c + 1) * B // chunks
        _search_range(lo, hi, q32, q64, qnorm, extra, width, depth, kind, K, squared, c_err, pk)


@nb.njit(cache=True)
def beam_serial(q32, q64, qnorm, extra, width, depth, kind, K, squared, c_err, pk):
    """:func:`_search_range` over the batch on the calling thread (small batches)."""
    B = q32.shape[0]
    _search_range(0, B, q32, q64, qnorm, extra, width, depth, kind, K, squared, c_err, pk)


@nb.njit(cache=True)
def path_dist(q, paths, v64, off, norms, radii, kind, K):
    """Float64 distances ``(B, k, L)`` (:func:`exact_dist`) from queries ``q (B, D)`` (search
    vectors) to the entities of ``paths (B, k, L)`` (ids ≥ 0 into level ``ℓ``'s rows
    ``off[ℓ] + id`` of ``v64``, ``norms``, ``radii``)."""
    B, k, L = paths.shape
    out = np.empty((B, k, L))
    for b in range(B):
        nz, sz = _query_polar(q, b, K) if kind == 0 else (0.0, 0.0)
        for t in range(k):
            for lv in range(L):
                row = off[lv] + paths[b, t, lv]
                out[b, t, lv] = exact_dist(q, b, nz, sz, v64, row, norms[row], radii[row], kind, K)
    return out
