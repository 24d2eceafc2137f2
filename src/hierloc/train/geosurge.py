"""GeoSURGE training on precomputed inputs, through the shared trainer (checkpoints, resume,
schedule, early stopping, torchrun): a cells folder (``hierloc cells build``), a token store
(``hierloc extract --tokens``), a semantic store (``hierloc semantic``; not needed with
``model.blocks=0``) and optionally a validation metadata file, whose records are placed in the
cells by their coordinates (``-1`` in a partition where their cell was dropped or never made).

Validation (per partition): flat top-1 accuracy over that partition's cells, the share of
images whose cell exists (``seen``); with the hierarchical product inference: the median km
and the GeoScore (mean ``5000·exp(−km/1492.7)``), which "best" and early stopping follow.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hierloc.data.artifacts import read_parquet
from hierloc.data.cells import load_cells, locate_cells
from hierloc.data.features import FeatureStore, read_rows
from hierloc.data.ids import IdIndex
from hierloc.data.metadata import MetadataReader
from hierloc.errors import InputError
from hierloc.eval.metrics import distance_metrics
from hierloc.geo.haversine import haversine_km
from hierloc.losses.partition import partition_loss
from hierloc.models import create_model
from hierloc.models.geosurge import GeoSurgeInputs, ancestors, product_scores, store_inputs
from hierloc.train.loop import Trainer

log = logging.getLogger(__name__)


@dataclass
class SurgeSplit:
    token_rows: np.ndarray  # (N,) row of each sample in the token store
    semantic_rows: np.ndarray | None  # (N,) row in the semantic store
    targets: torch.Tensor  # (N, P) row of the sample's cell per partition, -1 none
    coords: torch.Tensor  # (N, 2) float64 degrees (NaN when unknown)

    def __len__(self) -> int:
        return len(self.token_rows)


@dataclass
class GeoSurgeData:
    tokens: object  # FeatureStore of flattened tokens
    semantic: object | None  # FeatureStore of uint8 maps
    inputs: GeoSurgeInputs
    cells: pd.DataFrame  # cells.parquet
    parts: list  # the partitions (hierloc.geo.s2cells.Partition), coarse → fine
    train: SurgeSplit
    val: SurgeSplit | None
    dropped: dict

    def batch(self, split: SurgeSplit, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens ``(B, T·C)`` float32 and maps ``(B, S·S)`` uint8 of samples ``idx``, read
        from the memory-mapped stores in sorted order."""
        idx = np.asarray(idx)
        tok = torch.from_numpy(read_rows(self.tokens.features, split.token_rows[idx])).float()
        sem = None
        if self.semantic is not None and split.semantic_rows is not None:
            sem = torch.from_numpy(read_rows(self.semantic.features, split.semantic_rows[idx]))
        return tok, sem


def _rows_of(store, ids: np.ndarray) -> np.ndarray:
    return IdIndex(store.ids).lookup(np.asarray(ids, dtype=object))


def load_geosurge_data(
    cells: str | Path,
    tokens: str | Path,
    semantic: str | Path | None,
    val: str | Path | None = None,
) -> GeoSurgeData:
    tok_store = FeatureStore.open(tokens)
    sem_store = FeatureStore.open(semantic) if semantic is not None else None
    inputs = store_inputs(tok_store, sem_store)
    frame, parts = load_cells(cells)
    assign = read_parquet(
        Path(cells) / "assignments.parquet",
        "cells' record assignments",
        "make the cells folder again with hierloc cells build TRAIN_METADATA -o FOLDER",
    )
    P = len(parts)

    def split(ids, targets, latlon):
        t_rows = _rows_of(tok_store, ids)
        ok = t_rows >= 0
        s_rows = None
        if sem_store is not None:
            s_rows = _rows_of(sem_store, ids)
            ok &= s_rows >= 0
            s_rows = s_rows[ok]
        return SurgeSplit(
            t_rows[ok],
            s_rows,
            torch.from_numpy(targets[ok].astype(np.int64)),
            torch.from_numpy(latlon[ok]),
        ), int((~ok).sum())

    ids = assign["id"].to_numpy(dtype=object)
    targets = assign[[f"p{p}" for p in range(P)]].to_numpy()
    train, missing = split(ids, targets, np.full((len(ids), 2), np.nan))
    if not len(train):
        raise InputError(
            f"{tokens}"
            + ("" if semantic is None else f" and {semantic}")
            + f" hold none of the training ids of {cells}"
        )
    dropped = {"train_without_inputs": missing}
    val_split = None
    if val is not None:
        chunks = list(MetadataReader(val))
        vid = np.concatenate([c.ids for c in chunks]).astype(object)
        lat = np.concatenate([c.lat for c in chunks])
        lon = np.concatenate([c.lon for c in chunks])
        val_split, dropped["val_without_inputs"] = split(
            vid, locate_cells(parts, lat, lon), np.stack([lat, lon], 1).astype(np.float64)
        )
    if missing:
        log.warning("%d training samples have no tokens or semantic map; left out", missing)
    return GeoSurgeData(tok_store, sem_store, inputs, frame, parts, train, val_split, dropped)


class GeoSurgeTrainer(Trainer):
    """The shared trainer with GeoSURGE's model, batches, loss and validation."""

    def _build_model(self):
        d = self.data
        model = create_model("geosurge", self.cfg.model, d.inputs, [len(p) for p in d.parts])
        self.anc = ancestors([p.parent for p in d.parts[: self.cfg.model.depth]])
        return model, torch.nn.Module()  # the temperatures live in the model

    def train_step(self) -> dict:
        self.model.train()
        idx = self._batch()
        self.opt.zero_grad(set_to_none=True)
        tok, sem = self.data.batch(self.data.train, idx.numpy())
        targets = self.data.train.targets[idx][:, : self.cfg.model.depth].to(self.device)
        with self._autocast():
            logits = self.forward_model(
                tok.to(self.device), None if sem is None else sem.to(self.device)
            )
        valid = self.data.train.targets[self._global_batch][:, : self.cfg.model.depth] >= 0
        denominators = (valid.sum(0).double() / self.world).tolist()
        total, parts = partition_loss(logits, targets, denominators)
        total.backward()
        self._optimizer_step()
        tau = self.model.tau().tolist() if self.cfg.model.head == "cells" else []
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": float(total.detach()),
            "level_losses": parts,
            "tau": tau,
            "images": len(idx),
        }

    @torch.no_grad()
    def validate(self, split: SurgeSplit | None = None, batch: int = 256) -> dict:
        split = split if split is not None else self.data.val
        if split is None or not len(split):
            return {}
        self.model.eval()
        depth = self.cfg.model.depth
        hits, seen, km, losses = np.zeros(depth), np.zeros(depth), [], []
        leaf = self.data.parts[depth - 1]
        leaf_xy = torch.from_numpy(np.stack([leaf.mean_lat, leaf.mean_lon], 1))
        for start in range(0, len(split), batch):
            idx = np.arange(start, min(len(split), start + batch))
            tok, sem = self.data.batch(split, idx)
            t = split.targets[idx][:, :depth].to(self.device)
            with self._autocast():
                logits = self.model(
                    tok.to(self.device), None if sem is None else sem.to(self.device)
                )
            logp = [torch.log_softmax(lg.float(), dim=1) for lg in logits]
            for p, lp in enumerate(logp):
                hits[p] += float((lp.argmax(1) == t[:, p]).sum())
                seen[p] += float((t[:, p] >= 0).sum())
            losses.append(float(partition_loss(logits, t)[0]) * len(idx))
            best = product_scores(logp, self.anc).argmax(1).cpu()
            guess, truth = leaf_xy[best], split.coords[idx]
            km.append(haversine_km(truth[:, 0], truth[:, 1], guess[:, 0], guess[:, 1]))
        km = torch.cat(km).numpy()
        n = len(split)
        out = {f"val_acc_p{p}": float(hits[p] / n) for p in range(depth)}
        out |= {f"val_seen_p{p}": float(seen[p] / n) for p in range(depth)}
        d = distance_metrics(km)  # the one GeoScore and recall (strict <, as OSV5M)
        out["val_median_km"] = d["median_km"]
        out["val_geoscore"] = d["geoscore"]
        for k in (25, 200, 750, 2500):
            out[f"val_acc_{k}km"] = d[f"acc_{k}km"]
        out["val_loss"] = float(sum(losses) / n)
        return out

    def val_score(self, info: dict) -> float:
        return info.get("val_geoscore", -math.inf)
