"""HierLoc's trainer: the model and its GWH-InfoNCE, one step (entity side shared by the
batch, the fused memory-bounded loss, optional sampled entities), and validation (loss, flat
per-level accuracy beside the majority rate and the seen share, beam-search GeoScore — what
``hierloc predict`` answers — which selects the best checkpoint)."""

from __future__ import annotations

import math

import numpy as np
import torch

from hierloc.eval.metrics import geoscore
from hierloc.geo.haversine import haversine_km, pairwise_km, unit_vectors
from hierloc.hierarchy.build import LEVEL_NAMES
from hierloc.losses import GWHInfoNCE
from hierloc.models import create_model
from hierloc.search import EntityIndex, beam_search
from hierloc.train.data import Split
from hierloc.train.loop import Trainer


class LeaveOneOutMeans:
    """``model.loo_means``: for training images, the mean image embedding of their entity at
    each level over the *other* training images of it — what a held-out image sees, since it
    is in no entity's mean. An image alone in its entity gets its own leave-one-out mean of
    the level above (up to the country; zeros if alone there too).

    Built from the training split itself: per level the feature sums (float64) and counts of
    every entity, so one batch costs ``B × L`` row look-ups."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor, entity_counts: list[int]):
        x = features.double()
        self.sums, self.counts = [], []
        for lv, E in enumerate(entity_counts):
            t = targets[:, lv]
            self.sums.append(torch.zeros(E, x.shape[1], dtype=torch.float64).index_add_(0, t, x))
            self.counts.append(torch.bincount(t, minlength=E))

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
        """Per level ``(B, D)`` float32 leave-one-out means of images ``x`` with targets ``t``."""
        x, t = x.double().cpu(), t.cpu()
        out, above = [], torch.zeros_like(x)
        for lv, (sums, counts) in enumerate(zip(self.sums, self.counts, strict=True)):
            n = counts[t[:, lv]]
            loo = (sums[t[:, lv]] - x) / (n - 1).clamp(min=1)[:, None].double()
            above = torch.where((n >= 2)[:, None], loo, above)
            out.append(above.float())
        return out


class HierLocTrainer(Trainer):
    """HierLoc on a hierarchy's entities (see the module doc)."""

    def _build_model(self):
        """``(model, loss module)``: HierLoc and its GWH-InfoNCE (subclasses: other models)."""
        data = self.data
        self.entity_xyz = [  # unit vectors of the entities' mean locations, (E, 3) float64
            unit_vectors(*torch.tensor(np.array(c), dtype=torch.float64, device=self.device).T)
            for c in data.entities.coords
        ]
        model = create_model("hierloc", self.cfg.model, data.image_dim, data.entities)
        self.loo = None
        if self.cfg.model.loo_means:
            split = data.train
            self.loo = LeaveOneOutMeans(split.features, split.targets, model.entity_counts)
        return model, GWHInfoNCE(self.cfg.loss)

    @staticmethod
    def _geo_km(img_xyz: torch.Tensor, ent_xyz: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[(B, E_ℓ)]`` great-circle km from each image's unit vector to each entity's of
        every level (one matmul each)."""
        return [pairwise_km(img_xyz, e).float() for e in ent_xyz]

    def train_step(self) -> dict:
        """One optimizer step on ``batch_size`` images (this process's share of it)."""
        self.model.train()
        idx = self._batch()
        split = self.data.train
        self.opt.zero_grad(set_to_none=True)
        if self.ropt is not None:
            self.ropt.zero_grad(set_to_none=True)
        subsets, offsets = self._entity_sample(split.targets[self._global_batch])
        targets = split.targets[idx]
        if subsets is not None:  # positions of the positives within the sampled entities
            cols = zip(targets.T, subsets, strict=True)
            targets = torch.stack(
                [t if s is None else torch.searchsorted(s, t.contiguous()) for t, s in cols], 1
            )
        total, per_level = self.backward(
            split.features[idx].to(self.device),
            targets.to(self.device),
            split.coords[idx].to(self.device),
            subsets,
            offsets,
        )
        self._optimizer_step()
        return {
            "step": self.step,
            "epoch": self.epoch,
            "loss": total,
            "level_losses": per_level,
            "tau": float(self.loss_fn.tau.detach()),
            "images": len(idx),
        }

    def _entity_sample(self, targets: torch.Tensor):
        """``optim.sampled_entities``: per level, sorted entity indices (or ``None``: all) and
        the sampled-softmax offsets; ``(None, None)`` when off. Seeded by the step, so every
        process draws the same sample and a resumed run the same as a straight one."""
        n = self.cfg.optim.sampled_entities
        if not n:
            return None, None
        g = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + self.step)
        subsets, offsets = [], []
        for lv, E in enumerate(self.model.entity_counts):
            if E <= n:
                subsets.append(None)
                offsets.append(0.0)
                continue
            pos = targets[:, lv]
            idx = torch.unique(torch.cat([torch.randperm(E, generator=g)[:n], pos[pos >= 0]]))
            subsets.append(idx)
            offsets.append(math.log((E - 1) / max(1, len(idx) - 1)))
        return subsets, offsets

    def backward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        coords: torch.Tensor,
        subsets: list[torch.Tensor | None] | None = None,
        offsets: list[float] | None = None,
    ) -> tuple[float, list[float]]:
        """Accumulate the gradients of the batch's loss; returns ``(loss, per-level losses)``.

        The entity embeddings (and attention keys) are computed once and shared by the whole
        batch; the loss of each level runs through :func:`~hierloc.losses.fused.fused_level_loss`,
        which never holds more than a tile of the ``B × E`` matrices.
        """
        ent_xyz = self.entity_xyz
        if subsets is not None:
            subsets = [None if s is None else s.to(self.device) for s in subsets]
            ent_xyz = [e if s is None else e[s] for e, s in zip(ent_xyz, subsets, strict=True)]
        img_xyz = unit_vectors(coords[:, 0], coords[:, 1])
        if self.loo is not None:
            return self._backward_loo(x, t, img_xyz, ent_xyz, subsets, offsets)
        with self._autocast():
            z, ents = self.forward_model(x, subsets)
        total, per_level = self.loss_fn.points_loss(
            self.model.manifold, z, ents, list(t.T), img_xyz, ent_xyz, offsets
        )
        total.backward()
        return float(total.detach()), [float(v.detach()) for v in per_level]

    def _backward_loo(self, x, t, img_xyz, ent_xyz, subsets, offsets):
        """:meth:`backward` with ``model.loo_means``: the positives embedded with their
        leave-one-out means, the loss on the dense ``B × E`` distances of each level (``E``:
        the sampled entities with ``subsets``) with the positive column replaced."""
        subsets = subsets or [None] * len(t.T)
        rows = torch.stack(  # the positives' entity rows (t holds positions in the samples)
            [tl if s is None else s[tl] for tl, s in zip(t.T, subsets, strict=True)], 1
        )
        means = [m.to(self.device) for m in self.loo(x, rows)]
        with self._autocast():
            z, ents, pos = self.forward_model(x, subsets, positives=(rows, means))
        dists = self.model.distances(z, ents)
        d_pos = [self.model.manifold.dist(z, h) for h in pos]
        km = [None] * len(ents)
        if self.cfg.loss.loss == "gwh":
            km = self._geo_km(img_xyz, ent_xyz)
        total, per_level = self.loss_fn(dists, list(t.T), km, d_pos, offsets)
        total.backward()
        return float(total.detach()), [float(v.detach()) for v in per_level]

    # -- validation ---------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, split: Split | None = None, batch: int | None = None) -> dict:
        """Loss and flat nearest-entity accuracy per level on ``split`` (default: val), beside
        what they can be compared with: the majority-class rate (the training split's most
        frequent entity), the share of images whose entity exists in training (``seen``; a
        geographically disjoint split caps the fine levels' accuracy at it) and the accuracy
        among those; and the median km from the nearest finest entity's mean location."""
        split = split if split is not None else self.data.val
        if split is None:
            return {}
        if batch is None:  # ~16M image-entity pairs per batch bounds memory at any scale
            batch = min(512, max(8, 2**24 // sum(self.model.entity_counts)))
        self.model.eval()
        with self._autocast():
            ents = self.model.entity_embeddings()
        ctx = self.model.entity_context(ents)
        majority = [int(torch.bincount(t).argmax()) for t in self.data.train.targets.T]
        levels = len(ents)
        hits, seen, seen_hits, maj_hits = (np.zeros(levels) for _ in range(4))
        losses, known_n, km_err, beam_km = [], np.zeros(len(ents)), [], []
        finest = torch.tensor(np.array(self.data.entities.coords[-1]), dtype=torch.float64)
        index = self._val_index(ents)
        for start in range(0, len(split), batch):
            x = split.features[start : start + batch].to(self.device)
            t = split.targets[start : start + batch].to(self.device)
            coords = split.coords[start : start + batch].to(self.device)
            with self._autocast():
                z = self.model.image_embeddings(x, context=ctx)
            dists = self.model.distances(z, ents)
            km = self._geo_km(unit_vectors(coords[:, 0], coords[:, 1]), self.entity_xyz)
            for k, d in enumerate(dists):
                correct = d.argmin(dim=1) == t[:, k]
                known = t[:, k] >= 0
                hits[k] += float(correct.sum())
                seen[k] += float(known.sum())
                seen_hits[k] += float((correct & known).sum())
                maj_hits[k] += float((t[:, k] == majority[k]).sum())
                if known.any():
                    known_n[k] += float(known.sum())
                    losses.append(
                        float(self.loss_fn.level_loss(d[known], t[known, k], km[k][known]).sum())
                    )
            guess = finest[dists[-1].argmin(dim=1).cpu()]
            lat, lon = coords[:, 0].cpu().double(), coords[:, 1].cpu().double()
            km_err.append(haversine_km(lat, lon, guess[:, 0], guess[:, 1]))
            leaf = beam_search(index, z.detach().cpu(), width=self.cfg.run.val_beam).paths[:, 0, -1]
            guess = finest[leaf.clamp(min=0)]
            beam_km.append(haversine_km(lat, lon, guess[:, 0], guess[:, 1]))
        out: dict = {}
        n = len(split)
        for k in range(levels):
            out[f"val_acc_{LEVEL_NAMES[k]}"] = float(hits[k] / n)
            out[f"val_majority_{LEVEL_NAMES[k]}"] = float(maj_hits[k] / n)
            out[f"val_seen_{LEVEL_NAMES[k]}"] = float(seen[k] / n)
            out[f"val_acc_seen_{LEVEL_NAMES[k]}"] = float(seen_hits[k] / max(1.0, seen[k]))
        out["val_median_km"] = float(np.median(torch.cat(km_err).numpy())) if km_err else math.nan
        if beam_km:  # what prediction answers: beam search (run.val_beam), the city's location
            km = torch.cat(beam_km).numpy()
            out["val_geoscore"] = float(geoscore(km).mean())
            out["val_beam_median_km"] = float(np.median(km))
        # the mean over the images whose entity exists in training (only those have a loss)
        out["val_loss"] = float(sum(losses) / max(1.0, known_n.sum()))
        return out

    def val_score(self, info: dict) -> float:
        """What "best" (and early stopping) maximises: the validation GeoScore of beam search,
        what ``hierloc predict`` answers (the flat country + city accuracy it replaced rewards
        the city level, which a geographically disjoint split cannot reach)."""
        return info.get("val_geoscore", 0.0)

    def _val_index(self, ents: list[torch.Tensor]):
        """The entity index of the current embeddings, with the parent rows a model folder
        gets (:func:`hierloc.hierarchy.io.entity_frame`)."""
        pts = [h.detach().float().cpu() for h in ents]
        return EntityIndex.from_parents(
            self.model.manifold, pts, self.data.parent_rows, squared=self.cfg.loss.squared_distance
        )
