"""What every encoder declares: output dim, preprocessing, and a version tag for manifests.

Image encoders are ``torch.nn.Module``s mapping a preprocessed batch ``(B, 3, H, W)`` to
pooled features ``(B, D)``; ``tokens(x)`` gives the spatial feature map as tokens
``(B, T, C)`` (GeoSURGE's fusion). Text encoders map ``list[str]`` to ``(n, D)`` float32.
Preprocessing is plain PIL + NumPy (no torchvision), described by :class:`Preprocess` as
timm's ``PretrainedCfg`` does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``round(size / crop_pct)``, centre-crop ``size``, scale to
    [0, 1], normalise with ``mean``/``std`` (RGB)."""

    size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    # the longer side after resizing: "round" (ours, the bundled encoders) or "floor"
    # (torchvision's Resize and transformers' processors, which truncate)
    long_side: str = "round"

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["long_side"] == "round":  # the default: manifests written before it stay equal
            del d["long_side"]
        return d

    def layout(self, w: int, h: int) -> tuple[tuple[int, int], int, int]:
        """For a ``w × h`` image: the resized size and the crop's left and top, in pixels."""
        short = max(1, round(self.size / self.crop_pct))
        scale = short / min(w, h)
        cut = round if self.long_side == "round" else int
        new = (max(self.size, cut(w * scale)), max(self.size, cut(h * scale)))
        return new, (new[0] - self.size) // 2, (new[1] - self.size) // 2

    def crop_box(self, w: int, h: int) -> tuple[float, float, float, float]:
        """The part of a ``w × h`` image the network sees, as fractions of its width and
        height: ``(left, top, right, bottom)`` (a semantic map is cut the same way)."""
        (nw, nh), left, top = self.layout(w, h)
        return left / nw, top / nh, (left + self.size) / nw, (top + self.size) / nh

    def _resized(self, image):
        resample = {
            "bilinear": Image.BILINEAR,
            "bicubic": Image.BICUBIC,
            "nearest": Image.NEAREST,
        }[self.interpolation]
        new, left, top = self.layout(*image.size)
        return image.resize(new, resample), new, left, top

    def _tensor(self, image) -> torch.Tensor:
        arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))

    def __call__(self, image) -> torch.Tensor:
        """A PIL RGB image → ``(3, size, size)`` float32 tensor."""
        image, _, left, top = self._resized(image)
        return self._tensor(image.crop((left, top, left + self.size, top + self.size)))

    def ten_crop(self, image) -> tuple[torch.Tensor, list[tuple[tuple[float, ...], bool]]]:
        """The standard ten-crop (torchvision's ``TenCrop`` after ``Resize``): the image resized
        as for :meth:`__call__`, then the ``size × size`` crops at its four corners and its
        centre, and each mirrored. Returns ``(10, 3, size, size)`` and, per crop, its box as
        fractions of the image (``left, top, right, bottom``) and whether it is mirrored (a
        semantic map is cut the same way)."""
        image, (nw, nh), _, _ = self._resized(image)
        s = self.size
        centre = (int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0)))  # torchvision's
        corners = [(0, 0), (nw - s, 0), (0, nh - s), (nw - s, nh - s), centre]
        tensors, boxes = [], []
        for left, top in corners:
            crop = image.crop((left, top, left + s, top + s))
            box = (left / nw, top / nh, (left + s) / nw, (top + s) / nh)
            for flip in (False, True):
                view = crop.transpose(Image.FLIP_LEFT_RIGHT) if flip else crop
                tensors.append(self._tensor(view))
                boxes.append((box, flip))
        return torch.stack(tensors), boxes


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
