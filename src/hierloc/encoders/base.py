"""What every encoder declares: output dim, preprocessing, and a version tag for manifests.

Image encoders are ``torch.nn.Module``s mapping a preprocessed batch ``(B, 3, H, W)`` to
pooled features ``(B, D)``; ``tokens(x)`` gives the spatial feature map as tokens
``(B, T, C)`` (GeoSURGE's fusion). Text encoders map ``list[str]`` to ``(n, D)`` float32.
Preprocessing is plain PIL + NumPy (no torchvision), described by :class:`Preprocess` as
timm's ``PretrainedCfg`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hierloc.data.preprocess import Preprocess as _Preprocess


@dataclass(frozen=True)
class Preprocess(_Preprocess):
    """:class:`hierloc.data.preprocess.Preprocess` with torch tensors."""

    def __call__(self, image) -> torch.Tensor:
        """A PIL RGB image → ``(3, size, size)`` float32 tensor."""
        return torch.from_numpy(self.array(image))

    def ten_crop(self, image) -> tuple[torch.Tensor, list[tuple[tuple[float, ...], bool]]]:
        """:meth:`ten_crop_arrays` as one ``(10, 3, size, size)`` tensor, with the boxes."""
        arrays, boxes = self.ten_crop_arrays(image)
        return torch.from_numpy(arrays), boxes


class ImageEncoder(torch.nn.Module):
    """Base of image encoders. Subclasses set ``name``, ``dim``, ``preprocess``, ``version``
    and implement :meth:`tokens`; :meth:`forward` mean-pools the tokens by default."""

    name: str = "?"
    dim: int = 0
    version: str = "?"
    preprocess: Preprocess = Preprocess()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, T, C)
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, D)
        return self.tokens(x).mean(dim=1)

    def describe(self) -> dict:
        """What goes into a feature-store manifest."""
        return {
            "name": self.name,
            "dim": self.dim,
            "version": self.version,
            "preprocess": self.preprocess.to_dict(),
        }


class TextEncoder:
    """Base of text encoders: ``encode(texts) -> (n, dim)`` float32, L2-normalised."""

    name: str = "?"
    dim: int = 0
    version: str = "?"

    def encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.encode(list(texts))

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "version": self.version}


class TokenOutput(ImageEncoder):
    """An image encoder's tokens as its output, flattened: ``(B, T·C)`` rows for a feature store
    (``hierloc extract --tokens``; GeoSURGE's RGB stream). ``describe()`` records the token
    shape, the patch grid and whether a CLS token comes first (``T = h·w + 1``) or not
    (``T = h·w``: a CNN's feature map or a ViT's patch tokens)."""

    def __init__(self, encoder: ImageEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.name, self.version, self.preprocess = encoder.name, encoder.version, encoder.preprocess
        size = encoder.preprocess.size
        with torch.inference_mode():
            T, C = encoder.eval().tokens(torch.zeros(1, 3, size, size)).shape[1:]
        side = math.isqrt(T)
        cls = side * side != T
        if cls:
            side = math.isqrt(T - 1)
            if side * side != T - 1:
                raise ValueError(
                    f"{encoder.name}: {T} tokens are neither a square patch grid nor one CLS "
                    "token + a square grid"
                )
        self.tokens_shape, self.grid, self.cls_token = (int(T), int(C)), (side, side), cls
        self.dim = int(T * C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.tokens(x).flatten(1)

    def describe(self) -> dict:
        return self.encoder.describe() | {
            "output": "tokens",
            "tokens": list(self.tokens_shape),
            "token_grid": list(self.grid),
            "cls_token": self.cls_token,
        }
