"""The one-file geolocator at the paper's scale: a synthetic HierLoc with the paper's entity
counts (233 / 4,946 / 29,214 / 209,894, d = 128, the ``hierloc bench search`` hierarchy) and a
randomly initialised query head (image features of 512 dimensions, attention over the
entities as the paper's model), exported with ``--features-input`` in float32 and float16:
file size, onnxruntime load time and ms per image at batch 1 and 64, and the top-1 agreement
with the Python beam search.

    python scripts/export_scale.py [-o runs/export-scale]

Writes ``paper-scale.onnx`` / ``paper-scale-f16.onnx`` and ``results.json`` there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from hierloc.bench.hierarchy import PAPER_COUNTS
from hierloc.bench.search import make_index
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.locate.export import BeamGraph, write_graph
from hierloc.models.hierloc import HierLocConfig, HierLocQuery
from hierloc.search import beam_search


class Synthetic(SimpleNamespace):
    """What :class:`BeamGraph` reads of a Geolocator, for a synthetic hierarchy."""

    def level_temperatures(self):
        return None


def build(image_dim: int = 512) -> Synthetic:
    torch.manual_seed(0)
    index, _ = make_index(PAPER_COUNTS, d=128)
    query = HierLocQuery(HierLocConfig(dim=128), image_dim, len(PAPER_COUNTS)).eval()
    with torch.no_grad():
        context = query.entity_context([p.float() for p in index.points])
    rng = np.random.default_rng(0)
    levels = []
    for n in PAPER_COUNTS:
        xy = np.column_stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)])
        levels.append((np.arange(n).astype(str), np.arange(n).astype(str), xy, None))
    manifest = {"K": 0.8, "squared": True, "manifold": "lorentz"}
    return Synthetic(
        index=index,
        manifest=manifest,
        query=query,
        context=context,
        names=SimpleNamespace(levels=levels),
        raw_temperature=0.1,
        image_dim=image_dim,
    )


def export(geo, path: Path, half: bool) -> None:
    write_graph(BeamGraph(geo, 10, half).eval(), path, torch.zeros(2, geo.image_dim), "features")


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=Path("runs/export-scale"))
    args = ap.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    geo = build()
    x = np.random.default_rng(1).normal(size=(256, geo.image_dim)).astype(np.float32)
    with torch.no_grad():
        z = geo.query.image_embeddings(torch.from_numpy(x), context=geo.context)
    want = beam_search(geo.index, z, width=10).paths.numpy()
    results = {"entities": dict(zip(LEVEL_NAMES, PAPER_COUNTS, strict=True))}
    for half in (False, True):
        path = args.output / f"paper-scale{'-f16' if half else ''}.onnx"
        t0 = time.perf_counter()
        export(geo, path, half)
        made = time.perf_counter() - t0
        t0 = time.perf_counter()
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        load = time.perf_counter() - t0
        session.run(None, {"features": x[:1]})
        timings = {}
        for b in (1, 64):
            t0 = time.perf_counter()
            for s in range(0, 256, b):
                paths = session.run(None, {"features": x[s : s + b]})[0]
            timings[f"ms_per_image_b{b}"] = 1000 * (time.perf_counter() - t0) / 256
        paths = session.run(None, {"features": x})[0]
        results["float16" if half else "float32"] = {
            "file_mb": path.stat().st_size / 1e6,
            "export_s": made,
            "load_s": load,
            **timings,
            "top1_agreement": float((paths[:, 0] == want[:, 0]).all(1).mean()),
        }
        print(json.dumps(results, indent=2), flush=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
