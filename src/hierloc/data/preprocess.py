"""Image preprocessing in plain PIL + NumPy (no torch: the ONNX engine uses it too), described
by :class:`Preprocess` as timm's ``PretrainedCfg`` does; :class:`hierloc.encoders.base.Preprocess`
adds the torch tensors."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``round(size / crop_pct)`` (``resize="square"``: both
    sides, the aspect ratio not kept, as DINOv3's processor does), centre-crop ``size``,
    scale to [0, 1], normalise with ``mean``/``std`` (RGB)."""

    size: int = 224
    crop_pct: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    # the longer side after resizing: "round" (ours, the bundled encoders) or "floor"
    # (torchvision's Resize and transformers' processors, which truncate)
    long_side: str = "round"
    resize: str = "shorter"  # or "square"
    # the shorter side, size / crop_pct: "round" (ours) or "floor" (timm's transforms)
    short_side: str = "round"

    def __post_init__(self) -> None:
        if self.resize not in ("shorter", "square"):
            raise ValueError(f"Preprocess.resize must be shorter or square, got {self.resize!r}")
        for key in ("long_side", "short_side"):
            if getattr(self, key) not in ("round", "floor"):
                raise ValueError(f"Preprocess.{key} must be round or floor")

    def to_dict(self) -> dict:
        d = asdict(self)
        for key, default in (
            ("long_side", "round"),
            ("resize", "shorter"),
            ("short_side", "round"),
        ):
            if d[key] == default:  # the defaults: manifests written before them stay equal
                del d[key]
        return d

    def layout(self, w: int, h: int) -> tuple[tuple[int, int], int, int]:
        """For a ``w × h`` image: the resized size and the crop's left and top, in pixels."""
        ratio = self.size / self.crop_pct
        short = max(1, int(ratio) if self.short_side == "floor" else round(ratio))
        if self.resize == "square":
            return (short, short), (short - self.size) // 2, (short - self.size) // 2
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

    def _array(self, image) -> np.ndarray:
        arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def array(self, image) -> np.ndarray:
        """A PIL RGB image → ``(3, size, size)`` float32 array."""
        image, _, left, top = self._resized(image)
        return self._array(image.crop((left, top, left + self.size, top + self.size)))

    def ten_crop_arrays(self, image) -> tuple[np.ndarray, list[tuple[tuple[float, ...], bool]]]:
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
                tensors.append(self._array(view))
                boxes.append((box, flip))
        return np.stack(tensors), boxes
