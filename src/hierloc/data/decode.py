"""Decoding one image's bytes, robustly, with PIL alone (no torch, no pandas: the ONNX engine
reads photos with it): :func:`decode` never raises — a bad image (zero bytes, truncated,
corrupt, not an image, above the pixel limit) comes back with its reason; grayscale, CMYK,
palette and alpha images are converted to RGB (alpha composited on white) and EXIF orientation
is applied. :func:`sniff` names the format from the first bytes."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # above this an image is rejected as a possible decompression bomb

_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"BM", "bmp"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)


EMPTY = "empty file (0 bytes)"
NOT_AN_IMAGE = "not an image (unrecognised format)"


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (``jpeg``, ``png``, ``webp``, ``gif``, ``bmp``,
    ``tiff``), or ``None``: judged from the bytes, never from a name or a content type."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, name in _SIGNATURES:
        if data.startswith(magic):
            return name
    return None


def decode(data: bytes, max_pixels: int = MAX_PIXELS):
    """``(PIL RGB image, None)`` or ``(None, reason)``; never raises."""
    if not data:
        return None, EMPTY
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                return None, f"too large: {w}x{h} pixels (limit {max_pixels:,}; possible bomb)"
            img.load()
            img = ImageOps.exif_transpose(img)
            if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
                rgba = img.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                img = Image.alpha_composite(bg, rgba)
            if img.mode != "RGB":
                img = img.convert("RGB")
            return img, None
    except UnidentifiedImageError:
        return None, NOT_AN_IMAGE
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return None, f"too large: possible decompression bomb ({e})"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"corrupt or truncated: {msg}"
