"""``hierloc export`` and ``hierloc predict --engine onnx``: the one-file geolocator answers as the
model folder does (paths, coordinates, confidences), with no torch on its path."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.locate import load_locator

runner = CliRunner()


def _features(root):
    from hierloc.data.features import FeatureStore

    store = FeatureStore.open(root / "store")
    return np.asarray(store.features, np.float32), store.ids.to_pylist()


def _run(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: x})


@pytest.mark.parametrize("calibrated", [False, True])
def test_exported_beam_equals_the_model_folders_on_every_image(trained, tmp_path, calibrated):
    """All 300 images of the trained model: the file's 10 paths equal the Python beam search's
    (top-1 on every image), its scores, coordinates and per-level confidences equal the
    folder's answers to 1e-5; uncalibrated (the beam's mass) and calibrated (the level
    softmax at the fitted temperatures)."""
    from hierloc.locate.hierloc import calibrate

    model = tmp_path / "model"
    shutil.copytree(trained / "model", model)
    if calibrated:
        calibrate(model, trained / "train.parquet", trained / "store")
    out = tmp_path / "geo.onnx"
    res = runner.invoke(app, ["export", str(model), "-o", str(out), "--features-input"])
    assert res.exit_code == 0, res.output
    geo = load_locator(model)
    x, ids = _features(trained)
    paths, scores, coords, conf = _run(out, x)
    res = geo.search(x, top_k=10, beam=10)
    assert (paths[:, 0] == res.paths[:, 0].numpy()).all()  # top-1, every image
    assert (paths == res.paths.numpy()).mean() > 0.999  # the whole beam
    np.testing.assert_allclose(scores, res.scores.numpy(), rtol=1e-5, atol=1e-5)
    preds = geo.predict_features(x, ids=ids, top_k=10)
    for b, p in enumerate(preds):
        for j, a in enumerate(p.answers):
            assert coords[b, j].tolist() == pytest.approx([a.latitude, a.longitude], abs=1e-5)
            want = [a.level_confidence[pl.level] for pl in a.places]
            assert conf[b, j].tolist() == pytest.approx(want, abs=1e-5)
    import onnx

    meta = json.loads(onnx.load(str(out)).metadata_props[0].value)  # names ride along
    assert meta["levels"][0]["ids"][paths[0, 0, 0]] == preds[0].best.places[0].entity_id
    assert meta["calibrated"] is calibrated


def test_float16_tables_agree_on_most_images(trained, tmp_path):
    out = tmp_path / "geo16.onnx"
    args = ["export", str(trained / "model"), "-o", str(out), "--features-input", "--half"]
    assert runner.invoke(app, args).exit_code == 0
    x, _ = _features(trained)
    paths = _run(out, x)[0]
    want = load_locator(trained / "model").search(x, top_k=10, beam=10).paths.numpy()
    agree = (paths[:, 0] == want[:, 0]).all(1).mean()
    assert agree >= 0.9, agree  # float16 points move near-ties; the docs report the figure


@pytest.fixture(scope="module")
def photo_model(tmp_path_factory):
    """A model folder naming efficientnet-lite0, its export with the encoder, and photos."""
    from tests.test_predict import encoder_model

    root = tmp_path_factory.mktemp("export")
    model = encoder_model(root, 80, photo_seed=3, feature_seed=0, steps=2, name="model")
    res = runner.invoke(app, ["export", str(model), "-o", str(root / "geo.onnx")])
    assert res.exit_code == 0, res.output
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        img = rng.integers(0, 255, (40 + 9 * i, 64 + 5 * i, 3), dtype=np.uint8)
        Image.fromarray(img).save(photos / f"p{i}.{'png' if i % 2 else 'jpg'}")
    (photos / "zbad.jpg").write_bytes(b"not a photo")
    return root


def test_predict_engine_onnx_writes_the_same_document(photo_model):
    """Photos (one not an image) through ``--engine onnx`` and through the model folder: the
    same predictions document, numbers to 1e-5, the same reject."""
    root = photo_model
    docs = []
    for model, extra in ((root / "geo.onnx", ["--engine", "onnx"]), (root / "model", [])):
        args = ["predict", str(model), str(root / "photos"), "--top-k", "3", "-f", "json"]
        res = runner.invoke(app, [*args, *extra])
        assert res.exit_code == 0, res.output
        docs.append(json.loads(res.stdout))
    onnx_doc, torch_doc = docs
    assert onnx_doc["rejected"] == torch_doc["rejected"] and len(onnx_doc["rejected"]) == 1
    assert len(onnx_doc["results"]) == len(torch_doc["results"]) == 6
    for a, b in zip(onnx_doc["results"], torch_doc["results"], strict=True):
        assert (a["id"], a["file"], a["index"]) == (b["id"], b["file"], b["index"])
        for x, y in zip(a["answers"], b["answers"], strict=True):
            assert [p["id"] for p in x["places"]] == [p["id"] for p in y["places"]]
            assert x["latitude"] == pytest.approx(y["latitude"], abs=1e-5)
            assert x["confidence"] == pytest.approx(y["confidence"], abs=1e-5)
            assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-5)


def test_the_onnx_engine_imports_no_torch_pandas_or_numba(photo_model):
    code = (
        "import sys\n"
        "from hierloc.cli import main\n"
        f"sys.argv = ['hierloc', 'predict', {str(photo_model / 'geo.onnx')!r}, "
        f"{str(photo_model / 'photos' / 'p0.jpg')!r}, '--engine', 'onnx', '-f', 'json']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', [m for m in ('torch', 'pandas', 'numba', 'scipy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert '"answers"' in out.stdout, out.stdout + out.stderr
    assert "LOADED []" in out.stdout, out.stdout[-500:]


def test_bad_exports_and_files_are_one_line(trained, photo_model, tmp_path):
    knn = tmp_path / "knn"
    args = ["train", "--model", "knn", "--hierarchy", str(trained / "h")]
    args += ["--features", str(trained / "store"), "-o", str(knn)]
    assert runner.invoke(app, args).exit_code == 0
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_text("nope")
    photo = str(photo_model / "photos" / "p0.jpg")
    cases = [
        (["export", str(knn), "-o", str(tmp_path / "k.onnx")], "HierLoc"),
        (["export", str(trained / "model"), "-o", str(tmp_path / "m.txt")], ".onnx"),
        (["export", str(trained / "model"), "-o", str(tmp_path / "m.onnx")], "--features-input"),
        (["predict", str(not_onnx), photo, "--engine", "onnx"], "not a readable ONNX file"),
        (["predict", str(photo_model / "geo.onnx"), photo, "--engine", "onnx", "--top-k", "11"],
         "--top-k 11"),
    ]  # fmt: skip
    for argv, needle in cases:
        res = runner.invoke(app, argv)
        assert res.exit_code == 2, (argv, res.output)
        assert needle in res.output and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "k.onnx").exists() and not (tmp_path / "m.onnx").exists()


def test_bench_predict_measures_both_engines_on_the_same_photos(photo_model):
    from hierloc.bench import predict as bench

    r = bench.run(photo_model / "model", photo_model / "geo.onnx", photo_model / "photos", 1, 6)
    assert r["photos"] == 6  # the first six photos (the bad file sorts last)
    assert set(r["cold_s"]) == set(r["warm_photos_per_s"]) == {"torch", "onnx"}
    assert r["top1_agreement"] == 1.0
    assert r["cold_speedup"] == pytest.approx(r["cold_s"]["torch"] / r["cold_s"]["onnx"])


def test_the_exported_site_geolocates_in_the_browser_and_sends_nothing(photo_model, tmp_path):
    """``hierloc export --web``, served from a loopback static server, in headless Chromium:
    photos dropped on the page (one with EXIF GPS, one not an image) get the Python engine's
    answers (entity ids per level, coordinates and confidences to 1e-4), the true place and its
    error; every request goes to the page's own origin; no console error or CSP violation."""
    import functools
    import http.server
    import os
    import threading
    from pathlib import Path

    from PIL import ExifTags

    from hierloc.locate.onnx_engine import OnnxGeolocator

    chromium, driver_bin = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
    ort_web = os.environ.get("HIERLOC_ONNXRUNTIME_WEB")
    if not (chromium.exists() and driver_bin.exists() and ort_web and Path(ort_web).is_dir()):
        why = "headless Chromium or onnxruntime-web is missing (make ort-web)"
        if os.environ.get("HIERLOC_REQUIRE_BROWSER"):  # set by .ci/run, which installs both
            pytest.fail(why)
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    site = tmp_path / "site"
    res = runner.invoke(app, ["export", str(photo_model / "model"), "--web", "-o", str(site)])
    assert res.exit_code == 0, res.output
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 7.0)}
    Image.new("RGB", (64, 48), (120, 100, 60)).save(photos / "paris.jpg", exif=exif)
    for name in ("p1.png", "p3.png", "p5.png"):
        (photos / name).write_bytes((photo_model / "photos" / name).read_bytes())
    (photos / "notes.png").write_bytes(b"not a photo")
    names = ["paris.jpg", "p1.png", "p3.png", "p5.png", "notes.png"]
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1600",
                "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=opts, service=webdriver.ChromeService(str(driver_bin)))
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#models input")) == 1)
        assert "never sent" in browser.find_element(By.ID, "privacy").text
        browser.find_element(By.ID, "files").send_keys("\n".join(str(photos / n) for n in names))
        wait.until(lambda b: b.find_element(By.ID, "status").text == "done")
        doc = browser.execute_script("return window.hierlocLocal.last")
        requests = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
        )
        logs = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
        artifacts = Path(os.environ.get("HIERLOC_ARTIFACTS") or tmp_path)
        artifacts.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(artifacts / "site.png"))
        cards = browser.find_elements(By.CSS_SELECTOR, "article.card")
        paris = next(c for c in cards if c.find_element(By.TAG_NAME, "h2").text == "paris.jpg")
        assert "EXIF GPS: 48.8567, 2.3519" in paris.text and " km" in paris.text
    finally:
        browser.quit()
        httpd.shutdown()
        httpd.server_close()
    assert requests and all(r.startswith(url) for r in requests), requests
    assert logs == [], logs
    assert [r["file"] for r in doc["rejected"]] == ["notes.png"]
    assert doc["results"][0]["exif_gps"]["latitude"] == pytest.approx(48.8567, abs=1e-4)
    want, _ = OnnxGeolocator(site / "static" / "geolocator.onnx").predict_images(
        [photos / n for n in names[:-1]], top_k=3
    )
    assert len(doc["results"]) == len(want) == 4
    for got, p in zip(doc["results"], want, strict=True):
        assert got["file"] == p.id + Path(got["file"]).suffix
        assert len(got["answers"]) == len(p.answers) == 3
        for a, b in zip(got["answers"], p.answers, strict=True):
            assert [x["id"] for x in a["places"]] == [x.entity_id for x in b.places]
            assert (a["latitude"], a["longitude"]) == pytest.approx(
                (b.latitude, b.longitude), abs=1e-4
            )
            assert [x["confidence"] for x in a["places"]] == pytest.approx(
                [b.level_confidence[x.level] for x in b.places], abs=1e-4
            )


@pytest.mark.parametrize("share", [0, 10**9])
def test_gathered_and_whole_level_scoring_give_the_same_beam(trained, tmp_path, monkeypatch, share):
    """Both ways the file scores a level's candidates (gathering them, or scoring the level
    whole and gathering the scores), forced on every level: the Python search's paths."""
    import hierloc.locate.export as export

    monkeypatch.setattr(export, "GATHER_SHARE", share)
    out = tmp_path / "geo.onnx"
    export.export_onnx(trained / "model", out, with_encoder=False)
    x, _ = _features(trained)
    paths, scores = _run(out, x)[:2]
    res = load_locator(trained / "model").search(x, top_k=10, beam=10)
    assert (paths == res.paths.numpy()).all()
    np.testing.assert_allclose(scores, res.scores.numpy(), rtol=1e-5, atol=1e-5)
