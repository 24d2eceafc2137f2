"""``hierloc extract``: images → frozen-encoder features in a resumable feature store.

Images are decoded and preprocessed in DataLoader worker processes; the encoder runs batched
on ``device``. Every ``commit_every`` batches the rows are committed (see
:mod:`hierloc.data.features`); killing the run at any moment and rerunning the same command
ends with every image exactly once, and committed rows never change. Bad images are recorded
in ``rejects.csv`` with their reason and counted; they never stop the run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hierloc.data.features import FeatureStoreWriter
from hierloc.data.images import MAX_PIXELS, Item, Opener, collect_items, decode

log = logging.getLogger(__name__)


class ImageDataset(torch.utils.data.Dataset):
    """``(position, tensor, reason)``; a bad image gives a zero tensor and its reason."""

    def __init__(self, items: list[Item], preprocess, max_pixels: int = MAX_PIXELS) -> None:
        self.items = items
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self._opener: Opener | None = None

    def __len__(self) -> int:
        return len(self.items)

    def close(self) -> None:
        if self._opener is not None:
            self._opener.close()

    def __getitem__(self, i: int):
        if self._opener is None:  # one per worker process
            self._opener = Opener()
        size = self.preprocess.size
        try:
            data = self._opener.read(self.items[i])
        except (OSError, KeyError) as e:
            return i, torch.zeros(3, size, size), f"unreadable: {e}"
        img, reason = decode(data, self.max_pixels)
        if img is None:
            return i, torch.zeros(3, size, size), reason
        try:
            return i, self.preprocess(img), ""
        except (OSError, ValueError) as e:
            return i, torch.zeros(3, size, size), f"preprocessing failed: {e}"


def _collate(batch):
    pos = [b[0] for b in batch]
    return pos, torch.stack([b[1] for b in batch]), [b[2] for b in batch]


def default_workers() -> int:
    """Decoding workers: half the cores (the encoder's threads need the rest), 1 to 8."""
    import os

    return max(1, min(8, (os.cpu_count() or 2) // 2))


def fingerprint(items: list[Item], encoder: dict) -> str:
    h = hashlib.sha256()
    h.update(repr(sorted(encoder.items())).encode())
    for it in items:
        h.update(f"{it.id}\t{it.container}\t{it.member}\n".encode())
    return h.hexdigest()


def extract(
    sources: list[str | Path],
    out: str | Path,
    encoder: str = "efficientnet-lite0",
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "cpu",
    commit_every: int = 16,
    overwrite: bool = False,
    id_column: str = "id",
    path_column: str = "path",
    root: str | Path | None = None,
    max_pixels: int = MAX_PIXELS,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Extract features of every image of ``sources`` into the store ``out``.

    Returns:
        A summary: images total / done, rows, rejected (by reason), encoder, whether resumed.
    """
    from hierloc.encoders import create_image_encoder

    items = collect_items([Path(s) for s in sources], id_column, path_column,
                          Path(root) if root else None)  # fmt: skip
    enc = create_image_encoder(encoder)
    desc = enc.describe()
    writer = FeatureStoreWriter(out, len(items), enc.dim, desc, fingerprint(items, desc),
                                overwrite=overwrite)  # fmt: skip
    resumed_from = writer.items_done
    if writer.complete:
        log.info("%s is already complete", out)
        return _summary(writer, items, resumed_from)
    dev = torch.device(device)
    enc = enc.to(dev).eval()
    todo = items[writer.items_done :]
    loader = torch.utils.data.DataLoader(
        ImageDataset(todo, enc.preprocess, max_pixels),
        batch_size=batch_size,
        num_workers=default_workers() if workers is None else workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )
    offset = writer.items_done
    feats, ids, item_idx, rejects = [], [], [], []
    done = offset
    for n_batch, (pos, x, reasons) in enumerate(loader, start=1):
        ok = [k for k, r in enumerate(reasons) if not r]
        if ok:
            with torch.inference_mode():
                y = enc(x[ok].to(dev, non_blocking=True)).float().cpu().numpy()
            feats.append(y.astype(np.float16))
            ids += [todo[pos[k]].id for k in ok]
            item_idx += [offset + pos[k] for k in ok]
        rejects += [(offset + pos[k], todo[pos[k]].id, r) for k, r in enumerate(reasons) if r]
        done = offset + pos[-1] + 1
        if n_batch % commit_every == 0:
            writer.commit(np.concatenate(feats) if feats else None, ids, item_idx, rejects, done)
            feats, ids, item_idx, rejects = [], [], [], []
        if progress is not None:
            progress(done, len(items))
    loader.dataset.close()  # archives opened in this process (workers=0)
    writer.commit(np.concatenate(feats) if feats else None, ids, item_idx, rejects, done)
    writer.finish()
    return _summary(writer, items, resumed_from)


def _summary(writer: FeatureStoreWriter, items: list[Item], resumed_from: int) -> dict:
    import csv
    from collections import Counter

    reasons: Counter = Counter()
    path = writer.path / "rejects.csv"
    if path.exists():
        with open(path, newline="") as f:
            for row in list(csv.reader(f))[1:]:
                reasons[row[2].split(":")[0]] += 1
    return {
        "store": str(writer.path),
        "encoder": writer.manifest["encoder"]["name"],
        "dim": writer.manifest["dim"],
        "images": len(items),
        "rows": writer.rows,
        "rejected": writer.manifest["rejected"],
        "rejected_by_reason": dict(sorted(reasons.items())),
        "resumed_from_image": resumed_from,
        "complete": writer.complete,
    }
