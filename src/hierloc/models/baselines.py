"""The baselines' small networks and folder format (:mod:`hierloc.locate.baselines` reads
the folders, :mod:`hierloc.train.baselines` fits and writes them): the MLP that ``classify``
and ``regress`` train and load, and row normalisation for the cosine baselines."""

from __future__ import annotations

import numpy as np
import torch

FORMAT = "hierloc-baseline"  # manifest.json's format
VERSION = 1


def baseline_mlp(d_in: int, d_out: int, hidden: int, dropout: float) -> torch.nn.Module:
    """Linear → GELU → Dropout → Linear."""
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, d_out)
    )


def unit_rows(x: np.ndarray | torch.Tensor):
    """Rows scaled to unit length (zero rows stay zero)."""
    if isinstance(x, torch.Tensor):
        return x / x.norm(dim=1, keepdim=True).clamp(min=1e-12)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
