"""``hierloc serve``: every route, every limit and error body, auth on and off, micro-batching,
answers equal ``hierloc predict``'s, a hostile suite that never gets a 5xx, SIGTERM."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import ExifTags, Image
from typer.testing import CliRunner

from hierloc.bench.serve import free_port, start_server
from hierloc.cli import app as cli
from hierloc.locate.types import Prediction, Rejected
from hierloc.serve import Settings, create_app
from hierloc.serve.app import model_names
from tests.helpers import document_rows
from tests.test_hierarchy import pseudo_photos
from tests.test_predict import encoder_model

runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A HierLoc model folder and a knn folder, both naming ``efficientnet-lite0`` (so they
    take photos), trained on random features of pseudo photos; and a few photos."""
    root = tmp_path_factory.mktemp("serve")
    encoder_model(root, 80, photo_seed=3, feature_seed=0, steps=2, name="hierloc")
    res = runner.invoke(
        cli,
        [
            "train",
            "--model",
            "knn",
            "--hierarchy",
            str(root / "h"),
            "--features",
            str(root / "store"),
            "-o",
            str(root / "knn"),
        ],
    )
    assert res.exit_code == 0, res.output
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(5):
        img = rng.integers(0, 255, (48 + 7 * i, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(photos / f"p{i}.png")
    return root


def png(seed: int = 0, size=(40, 30), **save) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "PNG" if not save else "JPEG", **save
    )
    return buf.getvalue()


def gps_jpeg(lat: float, lon: float) -> bytes:
    """A JPEG whose EXIF GPS position is (lat, lon), north/east."""
    exif = Image.Exif()
    dms = lambda v: (float(int(v)), float(int(v * 60 % 60)), round(v * 3600 % 60, 4))  # noqa: E731
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: dms(lat), 3: "E", 4: dms(lon)}
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 30)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


def until(condition, timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (checked every 10 ms), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def ready(client: TestClient) -> TestClient:
    for _ in range(300):
        if client.get("/readyz").status_code == 200:
            return client
        time.sleep(0.05)
    raise AssertionError(client.get("/readyz").json())


@pytest.fixture(scope="module")
def client(models):
    app = create_app([models / "hierloc", models / "knn"], Settings(max_batch=8, max_upload_mb=1))
    with TestClient(app) as c:
        yield ready(c)


def post(client, files, **data):
    parts = [("photos", (name, body, "application/octet-stream")) for name, body in files]
    return client.post("/v1/locate", files=parts, data={k: str(v) for k, v in data.items()})


def _same_numbers(got, want, where="") -> None:
    """Two JSON values equal: strings, ints and keys exactly, floats to 1e-4 relative."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), (where, got, want)
        for k in want:
            _same_numbers(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (where, got, want)
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            _same_numbers(g, w, f"{where}[{k}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6), where
    else:
        assert got == want, where


def test_answers_equal_hierloc_predict(client, models):
    """The same photos (one with EXIF GPS, one not an image) through the API and through
    ``hierloc predict --format json``: one document, valid against the published schema, equal
    but for ``file`` (the path given on the command line, the name uploaded)."""
    import jsonschema_rs

    photos = models / "photos-doc"
    photos.mkdir(exist_ok=True)
    for p in sorted((models / "photos").iterdir()):
        (photos / p.name).write_bytes(p.read_bytes())
    (photos / "gps.jpg").write_bytes(gps_jpeg(48.85, 2.35))
    (photos / "zbad.png").write_bytes(b"not a png")
    names = sorted(p.name for p in photos.iterdir())
    files = [(n, (photos / n).read_bytes()) for n in names]
    published = client.get("/openapi.json").json()["paths"]["/v1/locate"]["post"]
    validator = jsonschema_rs.validator_for(
        published["responses"]["200"]["content"]["application/json"]["schema"]
    )
    for model in ("hierloc", "knn"):
        res = post(client, files, top_k=3, model=model)
        assert res.status_code == 200, res.json()
        api = res.json()
        out = runner.invoke(
            cli, ["predict", str(models / model), str(photos), "--top-k", "3", "-f", "json"]
        )
        assert out.exit_code == 0, out.output
        cli_doc = json.loads(out.stdout)
        for doc in (api, cli_doc):
            validator.validate(doc)
            assert doc["format"] == "hierloc-predictions" and doc["version"] == 1
            assert [r["id"] for r in doc["rejected"]] == ["zbad"]
            assert len(doc["results"]) == len(names) - 1
        assert [r["file"] for r in api["results"]] == names[:-1]
        assert [r["file"] for r in cli_doc["results"]] == [str(photos / n) for n in names[:-1]]
        assert [r["index"] for r in api["results"]] == list(range(len(names) - 1))
        gps = next(r for r in api["results"] if r["id"] == "gps")
        assert gps["exif_gps"] == {
            "latitude": pytest.approx(48.85),
            "longitude": pytest.approx(2.35),
        }
        assert all("error_km" in a for a in gps["answers"])
        strip = lambda d: {k: v for k, v in d.items() if k != "file"}  # noqa: E731
        _same_numbers(
            strip(api) | {"results": [strip(r) for r in api["results"]],
                          "rejected": [strip(r) for r in api["rejected"]]},
            strip(cli_doc) | {"results": [strip(r) for r in cli_doc["results"]],
                              "rejected": [strip(r) for r in cli_doc["rejected"]]},
        )  # fmt: skip


def test_models_health_ready_and_metrics(client):
    m = client.get("/v1/models").json()
    assert [x["name"] for x in m["models"]] == ["hierloc", "knn"]
    assert m["models"][0]["family"] == "hierloc" and m["models"][1]["family"] == "knn"
    assert m["models"][0]["encoder"] == "efficientnet-lite0"
    assert m["limits"]["max_photos"] == 8
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["models"] == ["hierloc", "knn"]
    post(client, [("a.png", png())])
    text = client.get("/metrics").text
    assert 'hierloc_requests_total{route="/v1/locate",status="200"}' in text
    assert "hierloc_batch_photos_bucket" in text and "hierloc_queue_photos" in text
    assert "hierloc_request_seconds_bucket" in text


def test_exif_gps_gives_the_error_in_km(client):
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {1: "S", 2: (33.0, 52.0, 4.0), 3: "E", 4: (151.0, 12.0, 36.0)}
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 120, 30)).save(buf, "JPEG", exif=exif)
    res = post(client, [("sydney.jpg", buf.getvalue())], top_k=2).json()
    r = res["results"][0]
    lat, lon = -(33 + 52 / 60 + 4 / 3600), 151 + 12 / 60 + 36 / 3600
    assert r["exif_gps"] == {"latitude": pytest.approx(lat), "longitude": pytest.approx(lon)}
    for a in r["answers"]:  # haversine by hand, R = 6371 km (OSV5M's constant, as the metrics)
        p1, p2 = np.radians(lat), np.radians(a["latitude"])
        dl = np.radians(a["longitude"] - lon)
        h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
        assert a["error_km"] == pytest.approx(2 * 6371.0 * np.arcsin(np.sqrt(h)), rel=1e-6)
    plain = post(client, [("plain.png", png())]).json()["results"][0]
    assert plain["exif_gps"] is None and "error_km" not in plain["answers"][0]


def test_unreadable_files_are_listed_beside_the_good_ones(client):
    bomb = io.BytesIO()
    Image.new("1", (9000, 8000)).save(bomb, "PNG")  # 72 megapixels in a few kB
    files = [
        ("good.png", png(1)),
        ("notes.txt", b"hello, not a photo"),
        ("empty.jpg", b""),
        ("trunc.jpg", png(2, save=True)[:200]),
        ("bomb.png", bomb.getvalue()),
        ("../../etc/passwd", png(3)),
    ]
    res = post(client, files)
    assert res.status_code == 200
    body = res.json()
    assert sorted(r["id"] for r in body["results"]) == ["good", "passwd"]  # a label, not a path
    why = {r["id"]: r["reason"] for r in body["rejected"]}
    assert why["notes"] == "not an image (unrecognised format)"
    assert why["empty"] == "empty file (0 bytes)"
    assert why["trunc"].startswith("corrupt or truncated")
    assert why["bomb"].startswith("too large")
    only_bad = post(client, [("a.txt", b"plain text"), ("b.bin", b"\x00\x01")])
    assert only_bad.status_code == 200 and only_bad.json()["results"] == []
    assert [(r["file"], r["index"]) for r in only_bad.json()["rejected"]] == [
        ("a.txt", 0),
        ("b.bin", 1),
    ]


def test_limits_and_error_bodies(client):
    many = post(client, [(f"{i}.png", png(i)) for i in range(9)])  # 9 > --max-batch 8
    assert many.status_code == 422 and "more than 8 photos" in many.json()["error"]
    big = [("big.png", os.urandom(1024 * 1024 + 10))]
    r = post(client, big)
    assert r.status_code == 413 and "limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted while read
        yield b"--x\r\nContent-Disposition: form-data; name=photos; filename=a.png\r\n\r\n"
        for _ in range(80):
            yield b"\0" * 16384

    r = client.post(
        "/v1/locate", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 413
    cases = [
        (
            {
                "content": b"garbage",
                "headers": {"content-type": "multipart/form-data; boundary=zz"},
            },
            400,
        ),
        ({"content": b"x", "headers": {"content-type": "multipart/form-data"}}, 400),
        ({"json": {"photos": []}}, 415),
        ({"files": [("photos", ("a.png", png(), "image/png"))], "data": {"top_k": "0"}}, 422),
        ({"files": [("photos", ("a.png", png(), "image/png"))], "data": {"top_k": "x"}}, 422),
        ({"files": [("photos", ("a.png", png(), "image/png"))], "data": {"beam": "1000"}}, 422),
        ({"files": [("photos", ("a.png", png(), "image/png"))], "data": {"model": "nope"}}, 422),
        ({"files": [("photos", ("a.png", png(), "image/png"))], "data": {"url": "http://x"}}, 422),
        ({"data": {"top_k": "3"}}, 415),
        ({"files": [("top_k", ("a.png", png(), "image/png"))]}, 422),
    ]
    for kwargs, status in cases:
        r = client.post("/v1/locate", **kwargs)
        assert r.status_code == status, (kwargs.get("data"), r.status_code, r.text)
        assert isinstance(r.json()["error"], str) and r.json()["error"]
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/static/../../etc/passwd").status_code == 404
    assert client.get("/static/index.py").status_code == 404
    assert client.delete("/v1/locate").status_code == 405


def test_hostile_requests_never_get_a_5xx(client):
    """Random bytes, random headers, random multipart fields: always an answer below 500."""
    rng = np.random.default_rng(0)
    for i in range(60):
        kind = i % 4
        blob = rng.bytes(int(rng.integers(0, 3000)))
        if kind == 0:
            r = client.post(
                "/v1/locate",
                content=blob,
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
        elif kind == 1:
            body = b"--b\r\n" + blob + b"\r\n--b--\r\n"
            r = client.post(
                "/v1/locate",
                content=body,
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
        elif kind == 2:
            r = post(client, [(blob[:20].decode("latin-1"), blob)], top_k=int(rng.integers(-3, 30)))
        else:
            head = png(i)[: int(rng.integers(8, 400))] + blob
            r = post(client, [("x.png", head)], beam=str(rng.integers(1, 12)))
        assert r.status_code < 500, (i, r.status_code, r.text)


def test_auth_on_and_off(models):
    token = "s3cret-token-of-enough-length"
    app = create_app([models / "knn"], Settings(token=token))
    with TestClient(app) as c:
        ready(c)
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200
        for path in ("/v1/models", "/metrics"):
            assert c.get(path).status_code == 401
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert c.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        r = post(c, [("a.png", png())])
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        good = c.post(
            "/v1/locate",
            files=[("photos", ("a.png", png(), "image/png"))],
            headers={"Authorization": f"Bearer {token}"},
        )
        assert good.status_code == 200


def test_page_is_self_contained_with_a_strict_csp(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    static = Path(__file__).resolve().parents[1] / "src" / "hierloc" / "serve" / "static"
    for f in static.iterdir():
        text = f.read_text()
        urls = [u for u in ("http://", "https://", "//cdn", "@import") if u in text]
        urls = [
            u
            for u in urls
            if not (
                u == "http://"
                and "http://www.w3.org/2000/svg" in text
                and text.count("http://") == 1
            )
        ]
        assert urls == [], f.name
        assert "<script>" not in text and " style=" not in text and "onclick" not in text
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    world = client.get("/static/world.jpg")
    assert world.status_code == 200 and world.content[:3] == b"\xff\xd8\xff"
    assert client.get("/docs").status_code == 404  # FastAPI's docs would load a CDN


class SlowLocator:
    """A Locator whose batches wait for ``gate``; answers one fixed place per photo."""

    manifest = {"format": "test", "version": 1}
    family = "slow"
    encoder_name = "none"
    image_dim = 1
    batches_photos = True

    def __init__(self):
        self.gate = threading.Event()
        self.entered = threading.Event()  # a batch is inside predict_prepared
        self.batches: list[list[str]] = []

    def prepare_photo(self, data):
        return np.zeros(1), None

    def image_encoder(self):  # created before the decode pool shares it
        return None

    def predict_prepared(self, ids, tensors, *, top_k, beam):
        self.entered.set()
        self.gate.wait(10)
        self.batches.append(list(ids))
        return [Prediction(i, []) for i in ids]

    def predict_photos(self, photos, *, top_k=5, beam=10):
        raise AssertionError("batched locators go through predict_prepared")

    def describe(self):
        return {"family": self.family}


def test_requests_arriving_while_a_batch_runs_share_the_next_and_a_full_queue_answers_503():
    slow = SlowLocator()
    app = create_app([slow], Settings(max_batch=8, max_wait_ms=300, max_queue=4))
    with TestClient(app) as c:
        ready(c)
        out: dict[int, int] = {}

        def call(k):
            out[k] = post(c, [(f"r{k}.png", png(k))]).status_code

        batcher = app.state.hierloc.batcher
        first = threading.Thread(target=call, args=(0,))
        first.start()
        assert slow.entered.wait(10)  # r0 runs alone (nobody else was coming), holds the worker
        threads = [threading.Thread(target=call, args=(k,)) for k in (1, 2, 3)]
        for t in threads:
            t.start()
        until(lambda: batcher.depth == 4)  # r1–r3 are queued behind it
        slow.gate.set()
        for t in [first, *threads]:
            t.join()
        assert out == {0: 200, 1: 200, 2: 200, 3: 200}
        assert slow.batches[0] == ["r0"]
        assert sorted(slow.batches[1]) == ["r1", "r2", "r3"]  # one batch for three requests
        slow.gate.clear()
        slow.entered.clear()
        busy = threading.Thread(target=call, args=(9,))
        busy.start()
        assert slow.entered.wait(10)  # r9 is running (blocked on the gate): 1 photo pending
        until(lambda: batcher.depth == 1)
        r = post(c, [(f"q{i}.png", png(i)) for i in range(4)])  # 1 + 4 > 4
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        slow.gate.set()
        busy.join()
        assert out[9] == 200


def test_the_batcher_waits_for_company_only_while_some_can_come():
    """A lone job goes at once when no request is being read; it waits (up to max_wait) while
    one is, and for a second after a batch that had company."""
    from hierloc.serve.batcher import MicroBatcher

    slow = SlowLocator()
    slow.gate.set()
    reading = [0]
    batcher = MicroBatcher({"m": slow}, max_batch=8, max_wait_ms=600, arriving=lambda: reading[0])

    def two_jobs(a, b):
        first = batcher.submit("m", [(a, b"x")], 5, 10)
        time.sleep(0.2)
        second = batcher.submit("m", [(b, b"x")], 5, 10)
        first.result(10), second.result(10)

    try:
        two_jobs("a", "b")  # idle: a is answered before b is sent
        reading[0] = 1
        two_jobs("c", "d")  # a request is being read: c waits, d joins it
        reading[0] = 0
        two_jobs("e", "f")  # nobody reading, but a batch had company 0.2 s ago: e waits
        time.sleep(1.2)
        two_jobs("g", "h")  # more than a second later: idle again
    finally:
        batcher.close()
    assert slow.batches == [["a"], ["b"], ["c", "d"], ["e", "f"], ["g"], ["h"]]


def test_model_names_for_folders_sharing_a_name():
    names = model_names([Path("runs/a/model"), Path("runs/b/model"), Path("x/knn")])
    assert names == ["a/model", "b/model", "knn"]
    assert model_names([Path("m"), Path("m")]) == ["m", "m-2"]


def test_a_family_without_batching_is_answered_one_job_at_a_time(models):
    class Whole(SlowLocator):
        batches_photos = False

        def predict_photos(self, photos, *, top_k=5, beam=10):
            return [Prediction(i, []) for i, _ in photos[:1]], [
                Rejected(i, "x") for i, _ in photos[1:]
            ]

    app = create_app([Whole()], Settings())
    with TestClient(app) as c:
        ready(c)
        body = post(c, [("a.png", png()), ("b.png", png(1))]).json()
        assert [r["id"] for r in body["results"]] == ["a"] and body["rejected"][0]["id"] == "b"


def test_a_model_that_fails_to_load_is_reported_by_readyz(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text('{"format": "hierloc-index", "version": 1}')
    with TestClient(create_app([tmp_path / "bad"])) as c:
        for _ in range(100):
            r = c.get("/readyz")
            if "failed" in r.json()["error"]:
                break
            time.sleep(0.05)
        assert r.status_code == 503 and "failed to load" in r.json()["error"]
        assert post(c, [("a.png", png())]).status_code == 503


def refused(args, needle):
    res = runner.invoke(cli, ["serve", *args])
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hierloc: error:") and needle in lines[0]


def test_serve_checks_its_arguments_before_loading(models, tmp_path):
    knn = str(models / "knn")
    refused([knn, "--host", "0.0.0.0"], "--token-file")
    refused([str(tmp_path / "none")], "no such model folder")
    (tmp_path / "short").write_text("abc\n")
    refused([knn, "--token-file", str(tmp_path / "short")], "at least 16 characters")
    refused([knn, "--token-file", str(tmp_path / "missing")], "cannot read the token file")
    refused([knn, "--token-file", str(tmp_path / "short"), "--no-auth"], "contradict")
    refused([knn, "--port", "70000"], "--port")
    refused([knn, "--max-batch", "0"], "--max-batch")


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(models, tmp_path):
    import httpx

    port = free_port()
    proc = start_server([models / "hierloc"], port, log=tmp_path / "server.log")
    url = f"http://127.0.0.1:{port}"
    result = {}
    photo = png()

    def slow_body():  # an upload that trickles in over 1.5 s: in flight when SIGTERM comes
        yield b"--s\r\nContent-Disposition: form-data; name=photos; filename=a.png\r\n\r\n"
        for k in range(0, len(photo), len(photo) // 5 + 1):
            time.sleep(0.3)
            yield photo[k : k + len(photo) // 5 + 1]
        yield b"\r\n--s--\r\n"

    def slow_request():
        headers = {"content-type": "multipart/form-data; boundary=s"}
        result["r"] = httpx.post(
            f"{url}/v1/locate", content=slow_body(), headers=headers, timeout=30
        )

    t = threading.Thread(target=slow_request)
    t.start()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t.join()
    assert proc.wait(timeout=30) == 0
    assert result["r"].status_code == 200 and result["r"].json()["results"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_the_page_in_a_real_browser(models, tmp_path):
    """Headless Chromium: pick photos (one with EXIF GPS, one not an image) with two models side
    by side; every card, answer, confidence bar and map marker appears, the reject shows its
    reason, zoom works by button and keyboard, nothing is fetched from elsewhere and the
    console has no CSP violation or error."""
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium = Path("/usr/bin/chromium")
    driver_bin = Path("/usr/bin/chromedriver")
    if not (chromium.exists() and driver_bin.exists()):
        why = "headless Chromium is not installed (apt-get install -y chromium chromium-driver)"
        if os.environ.get("HIERLOC_REQUIRE_BROWSER"):  # set by .ci/run, which installs it
            pytest.fail(why)
        pytest.skip(why)
    photos = tmp_path / "upload"
    photos.mkdir()
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)}
    Image.new("RGB", (64, 48), (120, 100, 60)).save(photos / "paris.jpg", exif=exif)
    (photos / "plain.png").write_bytes((models / "photos" / "p0.png").read_bytes())
    (photos / "notes.txt").write_text("not a photo")
    port = free_port()
    proc = start_server([models / "hierloc", models / "knn"], port, log=tmp_path / "server.log")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1280,1600",
        "--disable-dev-shm-usage",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=opts, service=webdriver.ChromeService(str(driver_bin)))
    try:
        url = f"http://127.0.0.1:{port}/"
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#models input")) == 2)
        boxes = browser.find_elements(By.CSS_SELECTOR, "#models input")
        assert boxes[0].is_selected() and not boxes[1].is_selected()
        boxes[1].click()  # both models, side by side
        files = [str(photos / n) for n in ("paris.jpg", "plain.png", "notes.txt")]
        browser.find_element(By.ID, "files").send_keys("\n".join(files))
        wait.until(lambda b: b.find_element(By.ID, "status").text == "done")
        cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
        assert len(cards) == 3
        by_name = {c.find_element(By.TAG_NAME, "h2").text: c for c in cards}
        for name in ("paris.jpg", "plain.png"):
            cols = by_name[name].find_elements(By.CSS_SELECTOR, ".column")
            assert [c.find_element(By.TAG_NAME, "h3").text for c in cols] == ["hierloc", "knn"]
            for col in cols:
                items = col.find_elements(By.CSS_SELECTOR, "ol.answers > li")
                assert len(items) == 3  # top-k 3, the page's default
                bars = items[0].find_elements(By.CSS_SELECTOR, ".bar > span")
                if col.find_element(By.TAG_NAME, "h3").text == "hierloc":  # per-level
                    assert len(bars) == 4 and all(b.get_attribute("style") for b in bars)
                else:  # knn has one confidence, no per-level ones: no empty bars
                    assert bars == []
        assert "EXIF GPS: 48.8567, 2.3519" in by_name["paris.jpg"].text
        assert "error" in by_name["paris.jpg"].text and " km" in by_name["paris.jpg"].text
        assert "could not be located: not an image" in by_name["notes.txt"].text
        overlay = browser.find_element(By.ID, "overlay")
        assert len(overlay.find_elements(By.CSS_SELECTOR, "circle")) == 2 * 2 * 3
        assert len(overlay.find_elements(By.CSS_SELECTOR, "rect.truth")) == 1
        assert len(overlay.find_elements(By.CSS_SELECTOR, "line.link")) == 2
        inner = browser.find_element(By.ID, "map-inner")
        browser.find_element(By.ID, "zoom-in").click()
        assert "scale(1.5)" in inner.get_attribute("style")
        browser.find_element(By.ID, "map").send_keys("+")
        assert "scale(1.875)" in inner.get_attribute("style")
        browser.find_element(By.ID, "zoom-reset").click()
        assert "scale(1)" in inner.get_attribute("style")
        names = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        assert names and all(n.startswith(url) or n.startswith("blob:") for n in names), names
        logs = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        assert logs == [], logs
        # the screenshot is the test's artifact: $HIERLOC_ARTIFACTS/page.png (default: tmp)
        artifacts = Path(os.environ.get("HIERLOC_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artifacts / "page.png"))
    finally:
        browser.quit()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def test_evaluate_reads_images_the_store_lacks_with_the_models_encoder(models, tmp_path):
    """``evaluate --data`` on images absent from the training store: with a ``path`` column
    they are read with the model's encoder (one unreadable file rejected with its reason);
    without one, one line saying which store to pass — never an empty table."""
    import pandas as pd

    meta = pseudo_photos(6, seed=11).copy()
    meta["id"] = [f"new{i}" for i in range(6)]
    names = [f"p{i}.png" for i in range(5)] + ["broken.png"]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    meta["path"] = [str(models / "photos" / n) for n in names[:5]] + ["broken.png"]
    meta.to_parquet(tmp_path / "new.parquet")
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(models / "hierloc"),
            "--data",
            str(tmp_path / "new.parquet"),
            "-o",
            str(tmp_path / "ev"),
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 5 and metrics["rejected"] == 1
    rejects = pd.read_csv(tmp_path / "ev" / "rejects.csv")
    assert rejects["id"].tolist() == ["new5"]
    assert rejects["reason"][0].startswith("unreadable image")
    # the same answers as hierloc predict on those photos
    preds = pd.read_parquet(tmp_path / "ev" / "predictions.parquet").set_index("id")
    out = runner.invoke(
        cli,
        ["predict", str(models / "hierloc"), str(models / "photos"), "--top-k", "1", "-f", "json"],
    )
    for row in document_rows(json.loads(out.stdout)):
        new_id = f"new{int(row['id'][1:])}"
        assert preds.loc[new_id, "city_id"] == row["city_id"]
    meta.drop(columns="path").to_parquet(tmp_path / "nopath.parquet")
    res = runner.invoke(
        cli,
        [
            "evaluate",
            str(models / "hierloc"),
            "--data",
            str(tmp_path / "nopath.parquet"),
            "-o",
            str(tmp_path / "ev2"),
        ],
    )
    assert res.exit_code == 2
    line = res.stderr.strip().splitlines()
    assert len(line) == 1 and "none of its 6 images are in" in line[0] and "--features" in line[0]
    assert not (tmp_path / "ev2").exists()


def test_bench_serve_small_load_hostile_mix_and_sigterm(models):
    """``hierloc bench serve`` at a small size: under load and a hostile mix no 5xx and no
    good request lost, each hostile kind answered as the README says, requests gathered into
    shared batches, SIGTERM during load exits 0."""
    from hierloc.bench import serve as bench

    r = bench.run(
        models / "hierloc", requests=24, concurrency=(1, 8), hostile=28, n_photos=8, max_wait_ms=50
    )
    assert r["status_5xx"] == 0 and r["lost_good"] == 0, r
    assert r["load"]["1"]["requests"] == r["load"]["8"]["requests"] == 24
    kinds = r["hostile"]["by_kind"]
    assert set(kinds) == set(bench.KINDS)
    want = {
        "good": "200",
        "slow": "200",
        "not_image": "200",
        "content_type": "415",
        "oversized": "413",
        "malformed": "400",
        "bomb": "200",
        "truncated": "200",
    }
    for kind, status in want.items():
        allowed = {"400", "422"} if kind == "malformed" else {status}
        assert set(kinds[kind]["statuses"]) <= allowed, (kind, kinds[kind])
    assert r["batches"]["mean_photos"] > 1  # concurrent requests shared encoder passes
    assert r["sigterm"]["exit_status"] == 0 and r["sigterm"]["answered"] > 0
    assert r["peak_rss_gb"] is not None and r["peak_rss_gb"] < bench.TARGET_RSS_GB


def test_query_parameters_are_read_or_refused_never_ignored(client):
    files = [("a.png", png(1))]
    parts = [("photos", (n, b, "image/png")) for n, b in files]
    res = client.post("/v1/locate?top_k=3", files=parts)
    assert res.status_code == 200 and len(res.json()["results"][0]["answers"]) == 3
    res = client.post("/v1/locate?top_k=-1", files=parts)
    assert res.status_code == 422 and "top_k=-1" in res.json()["error"]
    res = client.post("/v1/locate?model=knn&beam=4", files=parts)
    assert res.status_code == 200 and res.json()["model"] == "knn" and res.json()["beam"] == 4
    res = client.post("/v1/locate?topk=3", files=parts)
    assert res.status_code == 422 and "topk" in res.json()["error"]
    res = client.post("/v1/locate?top_k=3", files=parts, data={"top_k": "4"})
    assert res.status_code == 422 and "given twice" in res.json()["error"]
    for empty in ("top_k=", "beam=", "model="):  # empty is not "left out"
        res = client.post(f"/v1/locate?{empty}", files=parts)
        assert res.status_code == 422, (empty, res.json())


def test_openapi_describes_what_the_routes_take_and_answer(client):
    spec = client.get("/openapi.json").json()
    locate = spec["paths"]["/v1/locate"]["post"]
    body = locate["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["photos"] and body["properties"]["photos"]["type"] == "array"
    assert {p["name"] for p in locate["parameters"]} == {"top_k", "beam", "model"}
    assert set(locate["responses"]) >= {"200", "400", "401", "413", "415", "422", "503"}
    for code in ("413", "415", "422"):
        schema = locate["responses"][code]["content"]["application/json"]["schema"]
        assert schema["required"] == ["error"]
    assert set(spec["paths"]["/"]["get"]["responses"]["200"]["content"]) == {"text/html"}
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "image/svg+xml" in spec["paths"]["/favicon.ico"]["get"]["responses"]["200"]["content"]
    assert "404" in spec["paths"]["/static/{name}"]["get"]["responses"]
    # and the answers are what the document says
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/metrics").headers["content-type"].startswith("text/plain")
    assert client.get("/static/nope.js").status_code == 404


def test_a_wrong_method_is_405_with_allow(client):
    res = client.get("/v1/locate")
    assert res.status_code == 405 and res.headers["allow"] == "POST"
    assert "error" in res.json()


def test_each_result_echoes_its_file_name_and_position(client):
    res = post(client, [("x.jpg", png(1)), ("x.png", png(2)), ("bad.jpg", b"nope")])
    assert res.status_code == 200
    body = res.json()
    got = sorted((r["id"], r["file"], r["index"]) for r in body["results"])
    assert got == [("x", "x.jpg", 0), ("x#2", "x.png", 1)]
    assert [(r["file"], r["index"]) for r in body["rejected"]] == [("bad.jpg", 2)]


def test_openapi_fuzzer_passes_every_check(models, tmp_path):
    """schemathesis (all checks: status codes, content types, response schemas, headers,
    negative data rejected, positive data accepted, 405 with Allow…) against ``hierloc serve``
    on a loopback port, from the server's own ``/openapi.json``; bounded in examples and time."""
    import shutil
    import subprocess

    port = free_port()
    proc = start_server([models / "hierloc", models / "knn"], port, log=tmp_path / "server.log")
    try:
        st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
        assert st, "schemathesis is not installed (pip install -e '.[test]')"
        run = subprocess.run(
            [st, "run", f"http://127.0.0.1:{port}/openapi.json", "--checks", "all",
             "--max-examples", "25", "--max-time", "60", "--seed", "1", "--workers", "1",
             "--generation-database", "none", "--no-color", "--request-timeout", "30"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_request_options_from_form_and_query_string():
    """The handler's option parsing, on its own: defaults, the query string, both places only
    when equal, ranges, the model among the served, no stray form field."""
    from starlette.datastructures import FormData, QueryParams

    from hierloc.serve.app import request_options

    names = ["a", "b"]
    assert request_options(FormData(), QueryParams(""), names) == (5, 10, "a")
    assert request_options(FormData({"top_k": "3"}), QueryParams("beam=4&model=b"), names) == (
        3, 4, "b",
    )  # fmt: skip
    assert request_options(FormData({"top_k": "3"}), QueryParams("top_k=3"), names)[0] == 3
    for form, query, needle in (
        ({"top_k": "3"}, "top_k=4", "top_k given twice"),
        ({}, "top_k=", "top_k is empty"),
        ({}, "beam=0", "beam=0: must be between 1 and"),
        ({}, "model=c", "unknown model 'c'; served: a, b"),
        ({"colour": "red"}, "", "unknown fields ['colour']"),
    ):
        with pytest.raises(ValueError, match=re.escape(needle)):
            request_options(FormData(form), QueryParams(query), names)
