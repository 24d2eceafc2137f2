"""``hierloc bench search --scale``: how search cost grows with the world (HierLoc's claim that
entities grow sublinearly in the photos while retrieval grows with them).

Three synthetic worlds: the ``hierloc bench search`` hierarchy (the gazetteer's branching,
d = 128) at a tenth of the paper's counts, at them and at ten times them — 24k, 244k and 2.4M
entities, every level scaled alike — beside 20 image embeddings per entity for exhaustive
retrieval (the paper's 4.8 M photos per 244k entities): 0.49 M, 4.9 M and 49 M. Per world, each
in a fresh process so that its memory is its own:

- beam search (k = 10) with the compiled Python kernel: queries/s at batch 1 and 1024, the
  index's bytes and the process's peak memory;
- the same beam as one ONNX file (the export's graph over query points, float32): file size,
  load time, queries/s at batch 1 and 64 in onnxruntime, the session's memory, and whether its
  top-1 paths equal the kernel's;
- flat per-level search (every entity of every level scored; FAISS ``IndexFlatIP``);
- exhaustive retrieval over the image embeddings (torch or FAISS, the faster), measured where
  the vectors fit in a quarter of the machine's memory; where they do not, measured at the
  most vectors that fit and extrapolated linearly in the vector count from there (the report
  says which, and gives the slope between the two largest measured counts).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hierloc.bench._measure import run_isolated
from hierloc.bench.hierarchy import PAPER_COUNTS
from hierloc.bench.search import _exhaustive_torch, _flat_faiss, _time, make_index
from hierloc.eval.plots import _figure, _save
from hierloc.locate.export import BeamGraph, write_graph
from hierloc.search import beam_search

SCALES = (0.1, 1.0, 10.0)
IMAGES_PER_ENTITY = 20  # the paper: 4.8 M OSV5M photos for 244k entities (19.6)
ONNX_BATCH = 64


def scaled_counts(factor: float) -> tuple[int, ...]:
    return tuple(max(8, round(c * factor)) for c in PAPER_COUNTS)


def _queries(index, tangents, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    cities = rng.integers(0, len(tangents[-1]), n)
    noise = rng.normal(size=(n, tangents[-1].shape[1])).astype(np.float32) * 0.05
    return index.manifold.expmap0(torch.from_numpy(tangents[-1][cities] + noise) * 0.3)


class PointsHead(torch.nn.Module):
    """The export's query head replaced by the identity: the graph's input is the query point."""

    def image_embeddings(self, x, context=None):
        return x


def search_graph_geolocator(index, coords: np.ndarray) -> SimpleNamespace:
    """What :class:`hierloc.locate.export.BeamGraph` reads of a Geolocator, for a bare index:
    input = query points, uncalibrated beam confidences."""
    dim = index.points[0].shape[1]
    levels = [(None, None, None, None)] * (index.levels - 1) + [(None, None, coords, None)]
    return SimpleNamespace(
        index=index,
        manifest={"squared": True, "manifold": "lorentz"},
        query=PointsHead(),
        context=None,
        names=SimpleNamespace(levels=levels),
        raw_temperature=0.1,
        image_dim=dim,
        level_temperatures=lambda: None,
    )


def export_search_graph(index, coords: np.ndarray, path: Path, width: int = 10) -> None:
    graph = BeamGraph(search_graph_geolocator(index, coords), width).eval()
    write_graph(graph, path, torch.zeros(2, index.points[0].shape[1]), "points")


def _rate(fn, n: int, repeats: int) -> float:
    return n / _time(fn, repeats)


def _python_side(counts, batch: int, onnx_path: str, repeats: int) -> dict:
    """In its own process: the index, the kernel's and flat search's rates, the ONNX export."""
    torch.set_num_threads(os.cpu_count() or 1)
    index, tangents = make_index(counts, 128)
    z = _queries(index, tangents, batch)
    singles = [z[i : i + 1] for i in range(min(200, batch))]
    out = {
        "index_bytes": index.nbytes(),
        "beam_qps_b1": _rate(lambda: [beam_search(index, s, 10) for s in singles], 200, repeats),
        "beam_qps_batch": _rate(lambda: beam_search(index, z, 10), batch, repeats),
    }
    # flat per-level search with FAISS (IndexFlatIP per level): the faster implementation at
    # the paper's scale in ``hierloc bench search``; torch's chunked float64 matmul would need
    # tens of GB of scores at 2.4M entities
    q_np = np.ascontiguousarray(index.queries(z)[0].numpy(), dtype=np.float32)
    out["flat_qps_batch"] = _rate(lambda: _flat_faiss(index, q_np), batch, 1)
    coords = np.random.default_rng(0).uniform(-60, 60, (counts[-1], 2))
    export_search_graph(index, coords, Path(onnx_path))
    out["top1_paths"] = beam_search(index, z[:ONNX_BATCH], 10).paths[:, 0].numpy()
    out["queries"] = z[: max(200, ONNX_BATCH)].numpy().astype(np.float32)
    return out


def _onnx_side(path: str, queries: np.ndarray, repeats: int) -> dict:
    """In its own process: onnxruntime's load time, rates and paths for the exported beam."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - t0
    singles = [queries[i : i + 1] for i in range(200)]
    return {
        "load_s": load,
        "qps_b1": _rate(lambda: [session.run(None, {"points": s}) for s in singles], 200, repeats),
        f"qps_b{ONNX_BATCH}": _rate(
            lambda: session.run(None, {"points": queries[:ONNX_BATCH]}), ONNX_BATCH, repeats
        ),
        "top1_paths": session.run(None, {"points": queries[:ONNX_BATCH]})[0][:, 0],
    }


def _exhaustive(n_images: int, batch: int) -> dict:
    """In its own process: exhaustive top-10 inner product over ``n_images`` 129-d vectors."""
    rng = np.random.default_rng(2)
    db = torch.from_numpy(rng.standard_normal((n_images, 129), dtype=np.float32))
    q_np = rng.standard_normal((batch, 129), dtype=np.float32)
    t = _rate(lambda: _exhaustive_torch(db, torch.from_numpy(q_np)), batch, 1)
    import faiss  # optional dependency, as in ``hierloc bench search``

    flat = faiss.IndexFlatIP(129)
    flat.add(db.numpy())
    f = _rate(lambda: flat.search(q_np, 10), batch, 1)
    return {"qps_batch": max(t, f), "impl": "torch" if t >= f else "faiss"}


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run(
    scales: tuple[float, ...] = SCALES,
    batch: int = 1024,
    repeats: int = 3,
    say=lambda m: None,
    memory_budget: int | None = None,
) -> dict:
    """The report (module doc): one row per world, then the growth exponents between the
    smallest and the largest world (queries/s ∝ entities^slope). ``memory_budget``: the most
    bytes of image vectors measured (default: a quarter of the machine's memory)."""
    rows = []
    measured = []  # (images, exhaustive qps) actually measured
    budget = _memory_bytes() // 4 if memory_budget is None else memory_budget
    with tempfile.TemporaryDirectory(prefix="hierloc-scale-") as tmp:
        for factor in scales:
            counts = scaled_counts(factor)
            n_ent, n_img = sum(counts), IMAGES_PER_ENTITY * sum(counts)
            say(f"{n_ent:,} entities: index, beam, flat search and the ONNX export")
            path = str(Path(tmp) / f"beam-{n_ent}.onnx")
            py = run_isolated(_python_side, counts, batch, path, repeats)
            p = py["result"]
            say(f"{n_ent:,} entities: the ONNX file in onnxruntime")
            ox = run_isolated(_onnx_side, path, p["queries"], repeats)
            o = ox["result"]
            row = {
                "entities": n_ent,
                "counts": list(counts),
                "images": n_img,
                "beam_qps_b1": p["beam_qps_b1"],
                f"beam_qps_b{batch}": p["beam_qps_batch"],
                "beam_index_mb": p["index_bytes"] / 1e6,
                "beam_process_peak_mb": py["peak_anon_mb"],
                "onnx_file_mb": os.path.getsize(path) / 1e6,
                "onnx_load_s": o["load_s"],
                "onnx_qps_b1": o["qps_b1"],
                f"onnx_qps_b{ONNX_BATCH}": o[f"qps_b{ONNX_BATCH}"],
                "onnx_session_mb": ox["added_anon_mb"],
                "onnx_top1_equal": float((o["top1_paths"] == p["top1_paths"]).all(1).mean()),
                f"flat_qps_b{batch}": p["flat_qps_batch"],
                "exhaustive_index_mb": n_img * 129 * 4 / 1e6,
            }
            os.unlink(path)
            if n_img * 129 * 4 <= budget:
                say(f"{n_img:,} image vectors: exhaustive retrieval")
                ex = run_isolated(_exhaustive, n_img, batch)["result"]
                row[f"exhaustive_qps_b{batch}"] = ex["qps_batch"]
                row["exhaustive_impl"] = ex["impl"]
                row["exhaustive"] = "measured"
                measured.append((n_img, ex["qps_batch"]))
            else:  # measure the most vectors that fit, then extrapolate linearly from them
                n_fit = budget // (129 * 4)
                if n_fit > max(measured)[0]:
                    say(f"{n_fit:,} image vectors (the most that fit): exhaustive retrieval")
                    measured.append(
                        (n_fit, run_isolated(_exhaustive, n_fit, batch)["result"]["qps_batch"])
                    )
                n0, q0 = max(measured)  # cost linear in the vectors: qps ∝ 1 / n
                row[f"exhaustive_qps_b{batch}"] = q0 * n0 / n_img
                row["exhaustive"] = f"extrapolated from {n0:,} vectors (qps ∝ 1/n)"
            rows.append(row)
    first, last = rows[0], rows[-1]
    growth = np.log(last["entities"] / first["entities"])

    def slope(key: str) -> float:
        return round(float(np.log(last[key] / first[key]) / growth), 2)

    return {
        "batch": batch,
        "onnx_batch": ONNX_BATCH,
        "dim": 128,
        "images_per_entity": IMAGES_PER_ENTITY,
        "worlds": [{k: _round(v) for k, v in r.items()} for r in rows],
        "slopes": {  # d log(queries/s) / d log(entities), smallest → largest world
            "beam": slope(f"beam_qps_b{batch}"),
            "beam_b1": slope("beam_qps_b1"),
            "onnx_b1": slope("onnx_qps_b1"),
            "flat": slope(f"flat_qps_b{batch}"),
            "exhaustive": slope(f"exhaustive_qps_b{batch}"),
            # between the two largest measured vector counts (the extrapolation assumes −1)
            "exhaustive_measured": _measured_slope(measured),
        },
        "exhaustive_measured": {  # vectors → queries/s, every exhaustive run
            str(n): round(q, 1) for n, q in sorted(measured)
        },
    }


def _measured_slope(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    (n0, q0), (n1, q1) = sorted(points)[-2:]
    return round(float(np.log(q1 / q0) / np.log(n1 / n0)), 2)


def _round(v):
    if isinstance(v, float):
        return round(v, 3 if abs(v) < 10 else 1)
    return v


def growth_plot(report: dict, path: str | Path) -> None:
    """Two log-log panels against the world's entity count: queries/s per method (batch
    sizes in the legend; extrapolated points hollow) and memory (index, ONNX file, image
    vectors)."""
    worlds = report["worlds"]
    b, ob = report["batch"], report["onnx_batch"]
    x = np.array([w["entities"] for w in worlds], dtype=float)
    plt, fig = _figure(11, 6.4)
    ax = fig.add_subplot(121)
    series = [
        (f"beam k=10, Python kernel, batch {b}", f"beam_qps_b{b}", "C0", "o-"),
        ("beam k=10, Python kernel, batch 1", "beam_qps_b1", "C0", "o--"),
        (f"beam k=10, ONNX file, batch {ob}", f"onnx_qps_b{ob}", "C2", "s-"),
        ("beam k=10, ONNX file, batch 1", "onnx_qps_b1", "C2", "s--"),
        (f"flat per-level search, batch {b}", f"flat_qps_b{b}", "C1", "^-"),
    ]
    for label, key, color, style in series:
        ax.plot(x, [w[key] for w in worlds], style, color=color, label=label)
    ex = np.array([w[f"exhaustive_qps_b{b}"] for w in worlds])
    real = np.array([w["exhaustive"] == "measured" for w in worlds])
    ax.plot(
        x,
        ex,
        "-",
        color="C3",
        label=f"exhaustive retrieval ({report['images_per_entity']} images per entity), batch {b}",
    )
    ax.plot(x[real], ex[real], "D", color="C3")
    ax.plot(x[~real], ex[~real], "D", color="C3", mfc="white", label="extrapolated")
    _log_axes(ax, "queries / s", "Search speed as the world grows")
    ax = fig.add_subplot(122)
    for label, key, color, style in (
        ("entity index (Python: float32 points, children lists)", "beam_index_mb", "C0", "o-"),
        ("ONNX file (float32; the same size as the index)", "onnx_file_mb", "C2", "s:"),
        (f"ONNX session memory (peak, batch {ob})", "onnx_session_mb", "C2", "s--"),
        ("image vectors (float32)", "exhaustive_index_mb", "C3", "D-"),
    ):
        ax.plot(x, [w[key] for w in worlds], style, color=color, label=label)
    _log_axes(ax, "MB", "Memory as the world grows")
    _save(plt, fig, Path(path))


def _log_axes(ax, ylabel: str, title: str) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("entities in the hierarchy")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    ax.grid(True, which="both", color="0.9", lw=0.6)
