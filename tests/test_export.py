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
    preds = geo.predict_features(x, ids, top_k=10)
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
