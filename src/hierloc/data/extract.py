"""``hierloc extract``: images → frozen-encoder features in a resumable feature store.

Images are decoded and preprocessed in DataLoader worker processes; the encoder runs batched
on ``device``. Every ``commit_every`` batches the rows are committed (see
:mod:`hierloc.data.features`); killing the run at any moment and rerunning the same command
ends with every image exactly once, and committed rows never change. Bad images are recorded
in ``rejects.csv`` with their reason and counted; they never stop the run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.distributed as dist

from hierloc.data.features import FeatureStore, FeatureStoreWriter, check_store_output
from hierloc.data.images import MAX_PIXELS, Item, Opener, collect_items, decode
from hierloc.encoders import create_image_encoder
from hierloc.encoders.base import TokenOutput

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
    tokens: bool = False,
) -> dict:
    """Extract features of every image of ``sources`` into the store ``out``.

    ``tokens``: store the encoder's tokens (flattened, ``T·C`` per row; the manifest's encoder
    entry gives their shape and grid) instead of its pooled features — GeoSURGE's input.

    Under ``torchrun`` (``WORLD_SIZE > 1``) each rank extracts every WORLD_SIZE-th image into
    ``out/.ranks/rank-R`` and rank 0 merges them, in input order, into one store equal to a
    single-process run.

    Returns:
        A summary: images total / done, rows, rejected (by reason), encoder, whether resumed.
    """
    check_store_output(out, overwrite, [*sources, root])
    items = collect_items(
        [Path(s) for s in sources], id_column, path_column, Path(root) if root else None
    )
    enc = create_image_encoder(encoder)
    if tokens:
        enc = TokenOutput(enc)
    desc = enc.describe()
    fp = fingerprint(items, desc)
    out = Path(out)
    rank, world = dist_info()
    if world == 1:
        writer = FeatureStoreWriter(out, len(items), enc.dim, desc, fp, overwrite=overwrite)
        return _extract_into(
            writer, items, enc, batch_size, workers, device, commit_every, max_pixels, progress
        )
    return _extract_distributed(
        out,
        items,
        enc,
        desc,
        fp,
        rank,
        world,
        overwrite,
        batch_size,
        workers,
        device,
        commit_every,
        max_pixels,
        progress,
    )


def dist_info() -> tuple[int, int]:
    """``(rank, world size)`` from torchrun's environment (``(0, 1)`` outside torchrun)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _extract_into(
    writer, items, enc, batch_size, workers, device, commit_every, max_pixels, progress
) -> dict:
    resumed_from = writer.items_done
    if writer.complete:
        log.info("%s is already complete", writer.path)
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


def _extract_distributed(
    out,
    items,
    enc,
    desc,
    fp,
    rank,
    world,
    overwrite,
    batch_size,
    workers,
    device,
    commit_every,
    max_pixels,
    progress,
) -> dict:
    manifest = out / "manifest.json"
    if manifest.exists() and not overwrite:
        m = json.loads(manifest.read_text())
        if m.get("complete") and m.get("fingerprint") == fp:
            return _summary(
                FeatureStoreWriter(out, len(items), enc.dim, desc, fp), items, len(items)
            )
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    try:
        mine = items[rank::world]
        rank_dir = out / ".ranks" / f"rank-{rank}-of-{world}"
        if overwrite and rank == 0 and out.exists():
            shutil.rmtree(out)
        dist.barrier()
        writer = FeatureStoreWriter(rank_dir, len(mine), enc.dim, desc, fingerprint(mine, desc))
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        _extract_into(
            writer,
            mine,
            enc,
            batch_size,
            workers,
            device,
            commit_every,
            max_pixels,
            progress if rank == 0 else None,
        )
        dist.barrier()
        if rank == 0:
            _merge(out, items, enc.dim, desc, fp, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return _summary(FeatureStoreWriter(out, len(items), enc.dim, desc, fp), items, 0)


def _merge(out: Path, items, dim, desc, fp, world: int, block: int = 1 << 16) -> None:
    """Rank stores → one store in input order (rank r held items r, r+world, …)."""
    tmp = out.with_name(f".{out.name}.merge")
    writer = FeatureStoreWriter(tmp, len(items), dim, desc, fp, overwrite=True)
    sources, rejects = [], []
    for r in range(world):
        path = out / ".ranks" / f"rank-{r}-of-{world}"
        store = FeatureStore.open(path)
        local = pq.read_table(path / "ids.parquet", columns=["item"])["item"].to_numpy()
        sources.append((store, r + world * local))
        with open(path / "rejects.csv", newline="") as f:
            for item, ident, reason in list(csv.reader(f))[1:]:
                rejects.append((r + world * int(item), ident, reason))
    rows = np.concatenate(
        [
            np.stack([np.full(len(g), k), np.arange(len(g)), g], 1)
            for k, (_, g) in enumerate(sources)
        ]
    )
    rows = rows[np.argsort(rows[:, 2], kind="stable")]  # (n, 3): rank, row, global item
    rejects.sort()
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        feats = np.empty((len(part), dim), dtype=np.float16)
        for k, (store, _) in enumerate(sources):
            sel = part[:, 0] == k
            feats[sel] = store.features[part[sel, 1]]
        ids = [items[int(g)].id for g in part[:, 2]]
        last = start + block >= len(rows)
        writer.commit(
            feats,
            ids,
            part[:, 2].tolist(),
            rejects if last else [],
            len(items) if last else int(part[-1, 2]),
        )
    if len(rows) == 0:
        writer.commit(None, [], [], rejects, len(items))
    writer.finish()
    shutil.rmtree(out)
    tmp.rename(out)


def _summary(writer: FeatureStoreWriter, items: list[Item], resumed_from: int) -> dict:
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
