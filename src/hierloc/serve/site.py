"""``hierloc export MODEL --web -o SITE``: the service's page as a static folder that geolocates
in the browser — the photo never leaves the machine.

``SITE/index.html`` is the page ``hierloc serve`` serves, with a strict Content-Security-Policy
in a ``<meta>`` tag (``default-src 'self'``, ``'wasm-unsafe-eval'`` for WebAssembly) and two
more scripts: onnxruntime-web's WebAssembly build and ``local.js``, which answers the page's
API calls in the page (:mod:`hierloc.serve.static`'s ``local.js``). ``SITE/static/`` holds the
page's script, styles and Blue Marble, ``geolocator.onnx``
(:func:`hierloc.locate.export.export_onnx` with the encoder) with ``geolocator.json`` (its
metadata: entity names, preprocessing), and
onnxruntime-web's three files, copied from an installed copy of the npm package
(``npm install onnxruntime-web``; ``--onnxruntime-web DIR`` or ``$HIERLOC_ONNXRUNTIME_WEB``
names its ``dist`` folder, default ``./node_modules/onnxruntime-web/dist``). The site needs
no network: any static server serves it (``python -m http.server -d SITE``).
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from hierloc.data.writers import staged_folder
from hierloc.errors import InputError
from hierloc.locate.export import export_onnx

FORMAT = "hierloc-web"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' blob: data:; "
    "style-src 'self'; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'"
)
PRIVACY = (
    "Everything runs in this page: your photos are read by your browser and never sent anywhere."
)


def onnxruntime_web_dir(given: str | Path | None = None) -> Path:
    """The ``dist`` folder of an installed onnxruntime-web, holding :data:`ORT_FILES`."""
    env = os.environ.get("HIERLOC_ONNXRUNTIME_WEB")
    path = Path(given or env or "node_modules/onnxruntime-web/dist")
    missing = [f for f in ORT_FILES if not (path / f).is_file()]
    if missing:
        raise InputError(
            f"{path}: no onnxruntime-web here ({', '.join(missing)} missing); install it with "
            "npm install onnxruntime-web and pass --onnxruntime-web "
            "node_modules/onnxruntime-web/dist"
        )
    return path


def page_html() -> str:
    """The service's page for the static site: relative paths, the CSP, the two scripts."""
    static = resources.files("hierloc.serve") / "static"
    html = (static / "index.html").read_text()
    html = html.replace('"/static/', '"static/')
    html = html.replace(
        '<meta charset="utf-8">',
        f'<meta charset="utf-8">\n<meta http-equiv="Content-Security-Policy" content="{CSP}">',
    )
    html = html.replace(
        '<script src="static/app.js" defer></script>',
        '<script src="static/ort.wasm.min.js" defer></script>\n'
        '<script src="static/local.js" defer></script>\n'
        '<script src="static/app.js" defer></script>',
    )
    html = html.replace(
        '<footer class="muted">',
        f'<footer class="muted"><strong id="privacy">{PRIVACY}</strong> ',
    )
    return html


def export_site(
    model_dir: str | Path,
    output: str | Path,
    width: int = 10,
    half: bool = False,
    onnxruntime_web: str | Path | None = None,
    overwrite: bool = False,
) -> dict:
    """Write the static site at ``output`` (module doc); returns the ONNX file's metadata."""
    from hierloc.serve.app import _world_jpeg

    ort_dir = onnxruntime_web_dir(onnxruntime_web)
    static = resources.files("hierloc.serve") / "static"
    with staged_folder(Path(output), overwrite, (FORMAT,), inputs=[model_dir]) as tmp:
        (tmp / "static").mkdir()
        meta = export_onnx(model_dir, tmp / "static" / "geolocator.onnx", width, half, True)
        os.chmod(tmp / "static" / "geolocator.onnx", 0o644)  # a site's files are public
        (tmp / "static" / "geolocator.json").write_text(json.dumps(meta) + "\n")
        for name in ("app.js", "local.js", "style.css", "favicon.svg"):
            (tmp / "static" / name).write_bytes((static / name).read_bytes())
        (tmp / "static" / "world.jpg").write_bytes(_world_jpeg())
        for name in ORT_FILES:
            shutil.copyfile(ort_dir / name, tmp / "static" / name)
        (tmp / "index.html").write_text(page_html())
        manifest = {"format": FORMAT, "version": 1, "model": str(Path(model_dir).resolve())}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return meta
