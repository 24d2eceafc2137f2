"""Running the service: argument checks (before anything loads) and uvicorn.

A non-loopback ``--host`` needs ``--token-file`` (or an explicit ``--no-auth``); the token file
must hold one non-empty line. ``--workers N`` starts N processes, each loading the models once
(the app is rebuilt in each from ``HIERLOC_SERVE``, a JSON of the folders and settings).
SIGTERM: uvicorn stops accepting connections, lets in-flight requests finish, the batcher
drains its queue, and the process exits 0.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

from hierloc.data.manifests import read_model_manifest
from hierloc.errors import InputError
from hierloc.serve.app import Settings, create_app

ENV = "HIERLOC_SERVE"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read the token file ({e})") from e
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or len(lines[0]) < 16:
        raise InputError(
            f"{path}: the token file must hold one line of at least 16 characters, e.g. "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))' > FILE"
        )
    return lines[0]


def check_args(
    models: list[Path],
    host: str,
    port: int,
    token_file: Path | None,
    no_auth: bool,
    settings: Settings,
    workers: int,
) -> str | None:
    """Every argument checked before anything loads; returns the token (or None)."""
    if not models:
        raise InputError("give at least one model folder (hierloc index, hierloc train)")
    for m in models:
        read_model_manifest(m)  # exists and is a model folder: a one-line error otherwise
    if not 0 < port < 65536:
        raise InputError(f"--port {port}: must be between 1 and 65535")
    if token_file is not None and no_auth:
        raise InputError("--token-file and --no-auth contradict each other; choose one")
    if not is_loopback(host) and token_file is None and not no_auth:
        raise InputError(
            f"--host {host} is reachable from other machines: pass --token-file FILE (clients "
            "then send 'Authorization: Bearer TOKEN'), or --no-auth to serve without one"
        )
    if settings.max_batch < 1 or settings.max_wait_ms < 0 or settings.max_upload_mb <= 0:
        raise InputError("--max-batch must be >= 1, --max-wait-ms >= 0, --max-upload-mb > 0")
    if workers < 1:
        raise InputError("--workers must be >= 1")
    return None if token_file is None else read_token(token_file)


def factory():
    """The app of one worker process (``--workers``), from the environment."""
    cfg = json.loads(os.environ[ENV])
    return create_app([Path(m) for m in cfg["models"]], Settings(**cfg["settings"]))


def serve(
    models: list[Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    token_file: Path | None = None,
    no_auth: bool = False,
    settings: Settings | None = None,
    workers: int = 1,
) -> None:
    import uvicorn  # the server: only when serving

    settings = settings or Settings()
    token = check_args(models, host, port, token_file, no_auth, settings, workers)
    settings = Settings(**(asdict(settings) | {"token": token}))
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that
    # was there before it: a no-op here, so that a clean shutdown exits 0 (not -15)
    signal.signal(signal.SIGTERM, lambda *_: None)
    if workers == 1:
        app = create_app([Path(m) for m in models], settings)
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
        return
    os.environ[ENV] = json.dumps({"models": [str(m) for m in models], "settings": asdict(settings)})
    uvicorn.run(
        "hierloc.serve.run:factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        timeout_graceful_shutdown=30,
    )
