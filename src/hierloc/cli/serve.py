"""``hierloc serve``: the HTTP API and the page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import VerboseOpt, app, handles_errors


@app.command("serve")
@handles_errors
def serve_cmd(
    models: Annotated[
        list[Path], typer.Argument(help="Model folders (hierloc index, or a baseline's).")
    ],
    host: Annotated[
        str, typer.Option(help="Address to bind; other than loopback needs --token-file.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the bearer token clients must send (/v1/*, /metrics)."),
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve a non-loopback --host without a token.")
    ] = False,
    max_batch: Annotated[
        int, typer.Option(help="Photos per encoder pass, and the most per request.")
    ] = 64,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            help="How long a batch waits for more photos (not when the service is idle: a "
            "lone request is answered at once)."
        ),
    ] = 5.0,
    max_upload_mb: Annotated[float, typer.Option(help="Largest request body (MB).")] = 20.0,
    workers: Annotated[int, typer.Option(help="Processes (each loads the models).")] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, …")] = "cpu",
    verbose: VerboseOpt = False,
) -> None:
    """Serve model folders over HTTP: POST /v1/locate (multipart photos → top-k answers per photo, with the error in km when a photo carries EXIF GPS), GET /v1/models, /healthz, /readyz, /metrics (Prometheus) and a web page at / (drop photos, see the answers on a zoomable Blue Marble map). Concurrent requests are micro-batched into one encoder pass and one beam search. Offline: no CDN, no tiles; nothing a client sends is opened as a path or fetched. Binds 127.0.0.1 by default."""  # noqa: E501
    # before torch loads its OpenMP runtime: idle threads sleep rather than spin, so that
    # they do not take the cores from the encoder, the decoding threads and the event loop
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from hierloc.serve.app import Settings
    from hierloc.serve.run import serve

    settings = Settings(
        max_batch=max_batch, max_wait_ms=max_wait_ms, max_upload_mb=max_upload_mb, device=device
    )
    serve(models, host, port, token_file, no_auth, settings, workers)
