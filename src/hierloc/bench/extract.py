"""``hierloc bench extract``: extraction throughput (decode + preprocess + forward + commit)
vs the encoder's bare forward throughput on the same batch size, side by side."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hierloc.data.extract import default_workers, extract
from hierloc.encoders import create_image_encoder


def _images(folder: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i:06d}.jpg", quality=90)


def run(
    images: int = 512,
    encoder: str = "efficientnet-lite0",
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "cpu",
) -> dict:
    enc = create_image_encoder(encoder).to(device).eval()
    size = enc.preprocess.size
    x = torch.randn(batch_size, 3, size, size, device=device)
    with torch.inference_mode():
        enc(x)  # warm-up
        n_batches = max(1, images // batch_size)
        t0 = time.perf_counter()
        for _ in range(n_batches):
            enc(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        bare = n_batches * batch_size / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        _images(folder, images)
        t0 = time.perf_counter()
        summary = extract(
            [folder],
            Path(tmp) / "store",
            encoder=encoder,
            batch_size=batch_size,
            workers=workers,
            device=device,
        )
        full = images / (time.perf_counter() - t0)
    return {
        "images": images,
        "encoder": encoder,
        "batch_size": batch_size,
        "workers": default_workers() if workers is None else workers,
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "bare_forward_images_per_s": round(bare, 1),
        "extract_images_per_s": round(full, 1),
        "ratio": round(full / bare, 3),
        "target_ratio": 0.9,
        "rows": summary["rows"],
    }
