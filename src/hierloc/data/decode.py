"""Decoding one image's bytes, robustly, with PIL alone (no torch, no pandas: the ONNX engine
reads photos with it): :func:`decode` never raises — a bad image (zero bytes, truncated,
corrupt, not an image, above the pixel limit) comes back with its reason; grayscale, CMYK,
palette and alpha images are converted to RGB (alpha composited on white) and EXIF orientation
is applied. :func:`sniff` names the format from the first bytes."""

from __future__ import annotations

import io
import math
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


GPS_IFD = 0x8825


def _dms(value) -> float:
    """EXIF (deg, min, sec) rationals → degrees; a single number is taken as degrees."""
    if isinstance(value, int | float):
        if not math.isfinite(float(value)):
            raise ValueError(f"GPS value {value!r} is not a number (a zero denominator?)")
        return float(value)
    parts = [float(v) for v in value]
    if not all(math.isfinite(p) for p in parts):
        raise ValueError(
            f"GPS degrees/minutes/seconds {tuple(str(v) for v in value)} are not numbers "
            "(a rational with a zero denominator)"
        )
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[1] >= 60 or parts[2] >= 60:
        raise ValueError(f"not degrees/minutes/seconds: {tuple(value)}")
    return parts[0] + parts[1] / 60 + parts[2] / 3600


def gps_from_exif(exif) -> tuple[float, float]:
    """``(lat, lon)`` from a PIL ``Exif``; raises ``ValueError`` with the reason."""
    gps = exif.get_ifd(GPS_IFD)
    if not gps or 2 not in gps or 4 not in gps:
        raise ValueError("no GPS position in EXIF")
    lat, lon = _dms(gps[2]), _dms(gps[4])
    missing = [
        name
        for tag, name in ((1, "GPSLatitudeRef"), (3, "GPSLongitudeRef"))
        if not str(gps.get(tag, "")).strip()
    ]
    if missing:  # without them the hemisphere is unknown: never guess north/east
        raise ValueError(f"GPS position without {' and '.join(missing)} (N/S, E/W unknown)")
    lat_ref = str(gps[1]).strip().upper()[:1]
    lon_ref = str(gps[3]).strip().upper()[:1]
    if lat_ref not in ("N", "S") or lon_ref not in ("E", "W"):
        raise ValueError(f"bad GPS reference {lat_ref!r}/{lon_ref!r}")
    lat = -lat if lat_ref == "S" else lat
    lon = -lon if lon_ref == "W" else lon
    if abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"GPS position out of range: {lat}, {lon}")
    return lat, lon
