"""GeoSURGE's loss (§III-C): InfoNCE over the cells of each S2 partition, summed over partitions.

**Decision** (README): the softmax runs over *all* cells of a partition (the paper speaks of a
batch of random locations); with ≤ 10⁴ cells per partition the full softmax is cheap and exact."""

from __future__ import annotations

import torch
from torch import nn


def partition_loss(
    logits: list[torch.Tensor], targets: torch.Tensor, denominators: list[float] | None = None
) -> tuple[torch.Tensor, list[float]]:
    """InfoNCE per partition (cross-entropy over the cells; ``-1`` targets — a sample whose cell
    was dropped — are left out), summed over partitions. Each term is the mean over the valid
    samples, or the sum divided by ``denominators[p]`` (data-parallel training: the global
    batch's valid count / processes, so that averaging the processes' gradients gives the
    global mean)."""
    total = logits[0].new_zeros(())
    parts = []
    for p, lg in enumerate(logits):
        t = targets[:, p]
        ok = t >= 0
        denom = float(ok.sum()) if denominators is None else float(denominators[p])
        if not bool(ok.any()) or denom <= 0:
            parts.append(0.0)
            continue
        loss = nn.functional.cross_entropy(lg[ok].float(), t[ok], reduction="sum") / denom
        total = total + loss
        parts.append(float(loss.detach()))
    return total, parts
