"""``hierloc bench predict``: the two prediction engines side by side in one run — the model
folder (torch) and its ONNX export (onnxruntime, no torch) — on the same photos.

Cold: ``hierloc predict ENGINE_INPUT PHOTO`` as a new process, wall time from start to exit
(the median of ``repeats``; imports, model load, decode, encode, search, output). Warm: in one
process after a first call, photos/s at batch 1 and at batch 64 (photos read once into memory,
decoding included). Also the two engines' agreement on the top answer.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_COLD_S = 1.0


def _cold(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-m", "hierloc", "predict", *args, "-f", "json"],
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - t0)
        if out.returncode != 0:
            raise RuntimeError(f"hierloc predict {' '.join(args)} failed: {out.stderr[-500:]}")
    return statistics.median(times)


def _warm(predict, photos: list[tuple[str, bytes]], batch: int, rounds: int) -> float:
    predict(photos[:batch])  # load and warm up
    t0 = time.perf_counter()
    n = 0
    for r in range(rounds):
        chunk = [photos[(r * batch + i) % len(photos)] for i in range(batch)]
        n += len(predict(chunk)[0])
    return n / (time.perf_counter() - t0)


def run(model: Path, onnx_file: Path, photos: Path, repeats: int = 3, n: int = 64) -> dict:
    from hierloc.data.images import Opener, collect_items
    from hierloc.locate import load_locator
    from hierloc.locate.onnx_engine import OnnxGeolocator

    items = collect_items([photos])[:n]
    opener = Opener()
    data = [(it.id, opener.read(it)) for it in items]
    opener.close()
    one = items[0].member or items[0].container
    report: dict = {"photos": len(data), "cold_target_s": TARGET_COLD_S}
    report["cold_s"] = {
        "torch": _cold([str(model), one], repeats),
        "onnx": _cold([str(onnx_file), one, "--engine", "onnx"], repeats),
    }
    geo = load_locator(model)
    onx = OnnxGeolocator(onnx_file)
    engines = {
        "torch": lambda ph: geo.predict_photos(ph, top_k=5, beam=onx.width),
        "onnx": lambda ph: onx.predict_photos(ph, top_k=5),
    }
    report["warm_photos_per_s"] = {
        name: {
            "batch_1": _warm(f, data, 1, max(8, len(data) // 4)),
            "batch_64": _warm(f, data, min(64, len(data)), 2),
        }
        for name, f in engines.items()
    }
    a = {p.id: p.best.places[-1].entity_id for p in engines["torch"](data)[0]}
    b = {p.id: p.best.places[-1].entity_id for p in engines["onnx"](data)[0]}
    report["top1_agreement"] = sum(a[k] == b.get(k) for k in a) / max(1, len(a))
    report["cold_speedup"] = report["cold_s"]["torch"] / report["cold_s"]["onnx"]
    report["onnx_file_mb"] = onnx_file.stat().st_size / 1e6
    return report
