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

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hierloc.errors import InputError
from hierloc.models.geosurge import GeoSurgeInputs, ancestors, partition_loss, product_scores
from hierloc.train.loop import Trainer

log = logging.getLogger(__name__)
GEOSCORE_KM = 1492.7


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
    counts: list[int]  # cells per partition
    parents: list[np.ndarray]  # per partition, parent rows
    cell_coords: list[np.ndarray]  # per partition, (E, 2) mean coordinates of the samples
    train: SurgeSplit
    val: SurgeSplit | None
    dropped: dict

    def batch(self, split: SurgeSplit, idx) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens ``(B, T·C)`` float32 and maps ``(B, S·S)`` uint8 of samples ``idx``, read
        from the memory-mapped stores in sorted order."""
        idx = np.asarray(idx)

        def read(store, rows):
            order = np.argsort(rows, kind="stable")
            out = np.empty((len(rows), store.features.shape[1]), dtype=store.features.dtype)
            out[order] = store.features[rows[order]]
            return torch.from_numpy(out)

        tok = read(self.tokens, split.token_rows[idx]).float()
        sem = None
        if self.semantic is not None and split.semantic_rows is not None:
            sem = read(self.semantic, split.semantic_rows[idx])
        return tok, sem


def store_inputs(tokens, semantic) -> GeoSurgeInputs:
    """The model's input description from the stores' manifests (clear errors otherwise)."""
    from hierloc.data.semantic import semantic_info

    enc = tokens.manifest.get("encoder") or {}
    if enc.get("output") != "tokens":
        raise InputError(f"{tokens.path}: holds pooled features, not tokens; GeoSURGE needs "
                         "hierloc extract --tokens")  # fmt: skip
    T, C = enc["tokens"]
    info = semantic_info(semantic) if semantic is not None else {"classes": [], "map_size": 0}
    return GeoSurgeInputs(tokens=int(T), token_dim=int(C), grid=tuple(enc["token_grid"]),
                          cls_token=bool(enc["cls_token"]), classes=len(info["classes"]),
                          map_size=int(info["map_size"]))  # fmt: skip


def load_cells(cells: str | Path) -> tuple[pd.DataFrame, list[int], list[np.ndarray],
                                           list[np.ndarray]]:  # fmt: skip
    """``(cells frame, counts, parent rows, mean coordinates)`` per partition of a cells folder."""
    path = Path(cells)
    if not (path / "cells.parquet").exists():
        raise InputError(f"{path}: not a cells folder (no cells.parquet); make one with "
                         "hierloc cells build TRAIN_METADATA -o FOLDER")  # fmt: skip
    frame = pd.read_parquet(path / "cells.parquet")
    counts, parents, coords = [], [], []
    for p in sorted(frame["partition"].unique()):
        sub = frame[frame["partition"] == p].sort_values("row")
        counts.append(len(sub))
        parents.append(sub["parent_row"].to_numpy(np.int64))
        coords.append(sub[["mean_lat", "mean_lon"]].to_numpy(np.float64))
    return frame, counts, parents, coords


def locate_cells(frame: pd.DataFrame, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """``(N, P)``: the row of the cell holding each point in every partition, ``-1`` if none."""
    from hierloc.geo import s2
    from hierloc.geo.gazetteer import unit_xyz

    leaf = s2.leaf_cells(unit_xyz(np.asarray(lat, np.float64), np.asarray(lon, np.float64)))[0]
    parts = sorted(frame["partition"].unique())
    out = np.full((len(lat), len(parts)), -1, dtype=np.int64)
    for k, p in enumerate(parts):
        sub = frame[frame["partition"] == p].sort_values("row")
        ids = sub["cell_id"].to_numpy(np.uint64)
        levels = sub["level"].to_numpy(np.int64)
        order = np.argsort(ids)
        lo = s2.range_min(ids[order], levels[order])
        hi = s2.range_max(ids[order], levels[order])
        pos = np.searchsorted(lo, leaf, side="right") - 1
        ok = pos >= 0
        ok[ok] &= leaf[ok] <= hi[pos[ok]]
        out[ok, k] = sub["row"].to_numpy(np.int64)[order][pos[ok]]
    return out


def _rows_of(store, ids: np.ndarray) -> np.ndarray:
    from hierloc.data.ids import IdIndex

    return IdIndex(store.ids).lookup(np.asarray(ids, dtype=object))


def load_geosurge_data(cells: str | Path, tokens: str | Path, semantic: str | Path | None,
                       val: str | Path | None = None) -> GeoSurgeData:  # fmt: skip
    from hierloc.data.features import FeatureStore
    from hierloc.data.metadata import MetadataReader

    tok_store = FeatureStore.open(tokens)
    sem_store = FeatureStore.open(semantic) if semantic is not None else None
    inputs = store_inputs(tok_store, sem_store)
    frame, counts, parents, coords = load_cells(cells)
    assign = pd.read_parquet(Path(cells) / "assignments.parquet")
    P = len(counts)

    def split(ids, targets, latlon):
        t_rows = _rows_of(tok_store, ids)
        ok = t_rows >= 0
        s_rows = None
        if sem_store is not None:
            s_rows = _rows_of(sem_store, ids)
            ok &= s_rows >= 0
            s_rows = s_rows[ok]
        return SurgeSplit(t_rows[ok], s_rows, torch.from_numpy(targets[ok].astype(np.int64)),
                          torch.from_numpy(latlon[ok])), int((~ok).sum())  # fmt: skip

    ids = assign["id"].to_numpy(dtype=object)
    targets = assign[[f"p{p}" for p in range(P)]].to_numpy()
    train, missing = split(ids, targets, np.full((len(ids), 2), np.nan))
    if not len(train):
        raise InputError(f"{tokens}" + ("" if semantic is None else f" and {semantic}")
                         + f" hold none of the training ids of {cells}")  # fmt: skip
    dropped = {"train_without_inputs": missing}
    val_split = None
    if val is not None:
        chunks = list(MetadataReader(val))
        vid = np.concatenate([c.ids for c in chunks]).astype(object)
        lat = np.concatenate([c.lat for c in chunks])
        lon = np.concatenate([c.lon for c in chunks])
        val_split, dropped["val_without_inputs"] = split(
            vid, locate_cells(frame, lat, lon), np.stack([lat, lon], 1).astype(np.float64)
        )
    if missing:
        log.warning("%d training samples have no tokens or semantic map; left out", missing)
    return GeoSurgeData(tok_store, sem_store, inputs, frame, counts, parents, coords, train,
                        val_split, dropped)  # fmt: skip


class GeoSurgeTrainer(Trainer):
    """The shared trainer with GeoSURGE's model, batches, loss and validation."""

    def _build_model(self):
        from hierloc.models import create_model

        d = self.data
        model = create_model("geosurge", self.cfg.model, d.inputs, d.counts)
        self.anc = ancestors(d.parents[: self.cfg.model.depth])
        return model, torch.nn.Module()  # the temperatures live in the model

    def train_step(self) -> dict:
        self.model.train()
        idx = self._batch()
        self.opt.zero_grad(set_to_none=True)
        tok, sem = self.data.batch(self.data.train, idx.numpy())
        targets = self.data.train.targets[idx][:, : self.cfg.model.depth].to(self.device)
        with self._autocast():
            logits = self.forward_model(tok.to(self.device),
                                        None if sem is None else sem.to(self.device))  # fmt: skip
        valid = self.data.train.targets[self._global_batch][:, : self.cfg.model.depth] >= 0
        denominators = (valid.sum(0).double() / self.world).tolist()
        total, parts = partition_loss(logits, targets, denominators)
        total.backward()
        self._optimizer_step()
        tau = self.model.tau().tolist() if self.cfg.model.head == "cells" else []
        return {"step": self.step, "epoch": self.epoch, "loss": float(total.detach()),
                "level_losses": parts, "tau": tau, "images": len(idx)}  # fmt: skip

    @torch.no_grad()
    def validate(self, split: SurgeSplit | None = None, batch: int = 256) -> dict:
        from hierloc.geo.haversine import haversine_km

        split = split if split is not None else self.data.val
        if split is None or not len(split):
            return {}
        self.model.eval()
        depth = self.cfg.model.depth
        hits, seen, km, losses = np.zeros(depth), np.zeros(depth), [], []
        leaf_xy = torch.from_numpy(np.array(self.data.cell_coords[depth - 1]))
        for start in range(0, len(split), batch):
            idx = np.arange(start, min(len(split), start + batch))
            tok, sem = self.data.batch(split, idx)
            t = split.targets[idx][:, :depth].to(self.device)
            with self._autocast():
                logits = self.model(tok.to(self.device),
                                    None if sem is None else sem.to(self.device))  # fmt: skip
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
        out["val_median_km"] = float(np.median(km))
        out["val_geoscore"] = float(np.mean(5000 * np.exp(-km / GEOSCORE_KM)))
        for k in (25, 200, 750, 2500):
            out[f"val_acc_{k}km"] = float((km <= k).mean())
        out["val_loss"] = float(sum(losses) / n)
        return out

    def val_score(self, info: dict) -> float:
        return info.get("val_geoscore", -math.inf)


def write_geosurge_sources(run_dir: Path, cells, tokens, semantic, val) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {"model": "geosurge"} | {
        k: None if v is None else str(Path(v).resolve())
        for k, v in (("cells", cells), ("features", tokens), ("semantic", semantic), ("val", val))
    }
    (run_dir / "sources.json").write_text(json.dumps(data, indent=2) + "\n")
