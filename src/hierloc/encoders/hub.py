"""The papers' backbones through real loading code: ``hf:`` (transformers: DINOv2/DINOv3,
CLIP, StreetCLIP), ``timm:`` and ``open_clip:``, each accepting a local path.

Nothing is fetched behind the user's back: a local folder or file is loaded as is; a hub id
is passed to the library, which uses its cache and downloads only where the machine is online.
When the weights cannot be found the error names the encoder, where it looked, and how to
supply a local path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from hierloc.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from hierloc.encoders.base import ImageEncoder, Preprocess
from hierloc.errors import HierlocError, missing_dependency

log = logging.getLogger(__name__)


def _missing(spec: str, looked: str, how: str, cause: Exception) -> HierlocError:
    said = (str(cause).splitlines() or [""])[0][:200]
    why = f"{type(cause).__name__}: {said}" if said else type(cause).__name__
    return HierlocError(f"image encoder {spec!r}: weights not found ({looked}; {why}). {how}")


def preprocess_of_processor(proc, default_size: int) -> Preprocess:
    """The model's own transformers image processor as our :class:`Preprocess` (one code path
    that also knows which pixels each token sees): shorter side to ``size["shortest_edge"]``,
    centre crop ``crop_size`` when ``do_center_crop`` (DINOv2: 256 → 224; CLIP: 224 → 224), or
    a fixed ``size["height"] × size["width"]`` square without keeping the aspect ratio
    (DINOv3: 224 × 224); its resampling filter, mean and std."""
    size = getattr(proc, "size", None) or {}
    square = not size.get("shortest_edge") and size.get("height") is not None
    if square and size.get("width") != size.get("height"):
        raise HierlocError(
            f"image processor resizes to {size['height']} × {size['width']}: hierloc's "
            "preprocessing makes square inputs only"
        )
    short = size.get("shortest_edge") or size.get("height") or default_size
    crop = getattr(proc, "crop_size", None) or {}
    out = int(crop.get("height", short)) if getattr(proc, "do_center_crop", False) else int(short)
    resample = getattr(proc, "resample", 3)
    filters = {0: "nearest", 2: "bilinear", 3: "bicubic"}
    return Preprocess(
        size=out,
        crop_pct=out / int(short),
        mean=tuple(float(v) for v in proc.image_mean),
        std=tuple(float(v) for v in proc.image_std),
        interpolation=filters.get(int(getattr(resample, "value", resample)), "bicubic"),
        long_side="floor",
        resize="square" if square else "shorter",
    )


class HFImageEncoder(ImageEncoder):
    """A transformers vision model: ``forward`` = the model's image embedding (CLIP: projected
    image features; DINOv2: pooler output, i.e. the normalised CLS); ``tokens`` = the last
    hidden states ``(B, 1+T, C)`` (CLS first)."""

    def __init__(self, spec: str, ref: str) -> None:
        super().__init__()
        try:
            import transformers
        except ImportError as e:
            raise missing_dependency(e.name, f"image encoder {spec!r}") from e
        local = Path(ref).expanduser()
        kwargs = {"local_files_only": True} if local.exists() else {}
        source = str(local) if local.exists() else ref
        try:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
            model = transformers.AutoModel.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            where = f"folder {local}" if local.exists() else f"hub id {ref!r} and the local cache"
            raise _missing(
                spec,
                f"looked in the {where}",
                "Download the model on a machine with access (e.g. huggingface-cli download "
                f"{ref} --local-dir DIR) and use hf:DIR.",
                e,
            ) from e
        self.model = model.eval()
        self.is_clip = hasattr(model, "get_image_features")
        vision_cfg = getattr(config, "vision_config", config)
        size = int(getattr(vision_cfg, "image_size", 224))
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(source, **kwargs)
            self.preprocess = preprocess_of_processor(proc, size)
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            log.info("%s: no image processor config; resize %d, ImageNet mean/std", spec, size)
            self.preprocess = Preprocess(size=size, crop_pct=1.0)
        self.name = spec
        if self.is_clip:
            self.dim = int(getattr(config, "projection_dim", vision_cfg.hidden_size))
        else:
            self.dim = int(vision_cfg.hidden_size)
        self.version = f"hf:{getattr(config, 'model_type', '?')}:{source}"

    def _vision(self):
        return getattr(self.model, "vision_model", self.model)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self._vision()(pixel_values=x).last_hidden_state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_clip:
            out = self.model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state[:, 0]


class TimmImageEncoder(ImageEncoder):
    """``timm:<model name>[@<local weights file>]``: pooled features (``num_classes=0``)."""

    def __init__(self, spec: str, ref: str) -> None:
        super().__init__()
        try:
            import timm
        except ImportError as e:
            raise missing_dependency(e.name, f"image encoder {spec!r}") from e
        name, _, weights = ref.partition("@")
        try:
            if weights:
                model = timm.create_model(
                    name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": weights}
                )
            else:
                model = timm.create_model(name, pretrained=True, num_classes=0)
        except (OSError, RuntimeError, ValueError) as e:
            raise _missing(
                spec,
                f"looked for {weights or 'the hub weights of ' + name}",
                f"Download the weights file and use timm:{name}@/path/to/weights.safetensors.",
                e,
            ) from e
        cfg = model.pretrained_cfg
        self.model = model.eval()
        self.preprocess = Preprocess(
            size=int(cfg.get("input_size", (3, 224, 224))[-1]),
            crop_pct=float(cfg.get("crop_pct", 0.875)),
            mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
            std=tuple(cfg.get("std", IMAGENET_STD)),
            interpolation=cfg.get("interpolation", "bicubic"),
            long_side="floor",  # timm's transforms resize with torchvision (truncating)
            short_side="floor",  # and take the shorter side as floor(size / crop_pct)
        )
        self.name, self.dim = spec, int(model.num_features)
        self.version = f"timm-{timm.__version__}:{name}:{cfg.get('tag', '')}"

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model.forward_features(x)
        return feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class OpenClipImageEncoder(ImageEncoder):
    """``open_clip:<arch>:<pretrained tag or local checkpoint>``: CLIP image features."""

    def __init__(self, spec: str, ref: str) -> None:
        super().__init__()
        try:
            import open_clip
        except ImportError as e:
            raise missing_dependency(e.name, f"image encoder {spec!r}") from e
        arch, _, pretrained = ref.partition(":")
        try:
            model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=pretrained or None)
        except (OSError, RuntimeError, ValueError) as e:
            raise _missing(
                spec,
                f"looked for pretrained={pretrained!r}",
                f"Download the checkpoint and use open_clip:{arch}:/path/to/open_clip_model.bin.",
                e,
            ) from e
        self.model = model.eval()
        visual = model.visual
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[0]
        self.preprocess = Preprocess(
            size=int(size),
            crop_pct=1.0,
            mean=tuple(getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN),
            std=tuple(getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD),
            long_side="floor",  # open_clip's transform resizes with torchvision (truncating)
        )
        self.name, self.dim = spec, int(visual.output_dim)
        self.version = f"open_clip-{open_clip.__version__}:{arch}:{pretrained}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        self.model.visual.output_tokens = True
        try:
            _, tokens = self.model.visual(x)
        finally:
            self.model.visual.output_tokens = False
        return tokens
