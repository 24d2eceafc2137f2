"""``hierloc bench train``: full HierLoc training steps at the paper's scale (233 / 4,946 /
29,214 / 209,894 entities, d = 128, 1280-d image and entity image features, 384-d text
features, every entity a negative and an attention key) on generated data; reports images/s,
peak memory and the projected time of one OSV5M epoch (4.8 M images)."""

from __future__ import annotations

import resource
import tempfile
import time

import numpy as np
import torch

from hierloc.bench._measure import run_isolated
from hierloc.bench.hierarchy import PAPER_COUNTS
from hierloc.config import load_config
from hierloc.hierarchy.io import EntityTables
from hierloc.train.data import Split, TrainingData
from hierloc.train.hierloc import HierLocTrainer
from hierloc.train.runtime import start_trainer

OSV5M_TRAIN_IMAGES = 4_800_000


def _run(counts, batch_size, steps, image_dim, text_dim, warmup, overrides) -> dict:
    rng = np.random.default_rng(0)
    coords = [np.column_stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)]) for n in counts]
    tables = EntityTables(
        coords=coords,
        image_mean=[rng.standard_normal((n, image_dim), dtype=np.float32) for n in counts],
        text=[rng.standard_normal((n, text_dim), dtype=np.float32) for n in counts],
    )
    n = batch_size * (steps + warmup)
    targets = np.stack([rng.integers(0, c, n) for c in counts], 1)
    train = Split(
        torch.from_numpy(rng.standard_normal((n, image_dim), dtype=np.float32)),
        torch.from_numpy(targets),
        torch.from_numpy(np.column_stack([rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)])),
    )
    data = TrainingData(tables, [], train, None, image_dim, {})
    cfg = load_config(overrides=[f"optim.batch_size={batch_size}", *overrides])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = start_trainer(HierLocTrainer, cfg, data, tmp)
        for _ in range(warmup):
            trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    ips = steps * batch_size / seconds
    return {
        "images_per_s": round(ips, 1),
        "seconds_per_step": round(seconds / steps, 2),
        "peak_rss_gb": round(peak_gb, 2),
    }


def run(
    batch_size: int = 2048,
    steps: int = 1,
    quick: bool = False,
    warmup: int = 1,
    overrides: tuple[str, ...] = (),
) -> dict:
    counts = tuple(max(2, c // 100) for c in PAPER_COUNTS) if quick else PAPER_COUNTS
    image_dim, text_dim = (64, 16) if quick else (1280, 384)
    measured = run_isolated(
        _run, counts, batch_size, steps, image_dim, text_dim, warmup, list(overrides)
    )["result"]
    return {
        "entities": dict(zip(("country", "region", "subregion", "city"), counts, strict=True)),
        "batch_size": batch_size,
        "steps": steps,
        **measured,
        "osv5m_epoch_hours": round(OSV5M_TRAIN_IMAGES / measured["images_per_s"] / 3600, 1),
        "target_images_per_s": 100,
        "target_peak_rss_gb": 16,
        "quick": quick,
    }
