"""``hierloc extract``: sources, bad images, features equal to a direct forward pass, and
resuming after killing a real extraction process."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.data.extract import extract
from hierloc.data.features import FeatureStore
from hierloc.data.images import decode
from hierloc.encoders import create_image_encoder
from hierloc.errors import InputError
from tests.helpers import torchrun

runner = CliRunner()


def make_images(folder, n, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 255, (40 + i % 7, 50, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:04d}.jpg", quality=90)


def jpeg_bytes(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_decode_handles_every_kind_of_bad_and_odd_image():
    rng = np.random.default_rng(1)
    good = jpeg_bytes(rng.integers(0, 255, (30, 60, 3), dtype=np.uint8))
    assert decode(b"")[1] == "empty file (0 bytes)"
    assert decode(b"not an image at all")[1].startswith("not an image")
    assert decode(good[: len(good) // 3])[1].startswith("corrupt or truncated")
    # a decompression bomb: tiny file, 100 megapixels
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, format="PNG")
    img, reason = decode(buf.getvalue())
    assert img is None and reason.startswith("too large") and "100000000" in reason
    # grayscale, CMYK, palette with transparency, RGBA: converted to RGB
    for mode, color in (("L", 128), ("CMYK", (0, 0, 0, 0)), ("RGBA", (255, 0, 0, 0))):
        b = io.BytesIO()
        Image.new(mode, (20, 10), color).save(b, format="PNG" if mode != "CMYK" else "JPEG")
        img, reason = decode(b.getvalue())
        assert reason is None and img.mode == "RGB" and img.size == (20, 10)
    transparent = decode(b.getvalue())[0]
    assert transparent.getpixel((0, 0)) == (255, 255, 255)  # alpha 0 composited on white
    # EXIF orientation 6 (rotate 90° clockwise): width and height swap
    exif = Image.Exif()
    exif[0x0112] = 6
    b = io.BytesIO()
    Image.new("RGB", (40, 10), (0, 255, 0)).save(b, format="JPEG", exif=exif)
    img, reason = decode(b.getvalue())
    assert reason is None and img.size == (10, 40)


def test_folder_extraction_matches_direct_forward_and_records_rejects(tmp_path):
    make_images(tmp_path / "imgs", 10)
    (tmp_path / "imgs" / "empty.jpg").write_bytes(b"")
    (tmp_path / "imgs" / "sub").mkdir()
    Image.new("L", (30, 30), 77).save(tmp_path / "imgs" / "sub" / "gray.png")
    summary = extract([tmp_path / "imgs"], tmp_path / "store", batch_size=4, workers=0)
    assert (summary["images"], summary["rows"], summary["rejected"]) == (12, 11, 1)
    store = FeatureStore.open(tmp_path / "store")
    ids = store.ids.to_pylist()
    assert ids == [f"img{i:04d}" for i in range(10)] + ["sub/gray"]
    enc = create_image_encoder("efficientnet-lite0")
    paths = [tmp_path / "imgs" / f"img{i:04d}.jpg" for i in (0, 7)]
    x = torch.stack([enc.preprocess(Image.open(p).convert("RGB")) for p in paths])
    with torch.no_grad():
        ref = enc(x).numpy()
    got = np.asarray(store.features[[0, 7]], dtype=np.float32)
    assert np.allclose(got, ref, rtol=2e-3, atol=2e-3)
    rejects = pd.read_csv(tmp_path / "store" / "rejects.csv")
    assert rejects["id"].tolist() == ["empty"] and "0 bytes" in rejects["reason"][0]
    # rerunning a complete store changes nothing
    before = (tmp_path / "store" / "ids.parquet").read_bytes()
    again = extract([tmp_path / "imgs"], tmp_path / "store", batch_size=4, workers=0)
    assert again["rows"] == 11 and (tmp_path / "store" / "ids.parquet").read_bytes() == before


def test_zip_tar_and_metadata_sources_give_the_same_store(tmp_path):
    make_images(tmp_path / "imgs", 6, seed=3)
    files = sorted((tmp_path / "imgs").glob("*.jpg"))
    (tmp_path / "osv" / "images" / "train").mkdir(parents=True)
    with zipfile.ZipFile(tmp_path / "osv" / "images" / "train" / "00.zip", "w") as z:
        for f in files[:3]:
            z.write(f, f.name)
    with zipfile.ZipFile(tmp_path / "osv" / "images" / "train" / "01.zip", "w") as z:
        for f in files[3:]:
            z.write(f, f.name)
    with tarfile.open(tmp_path / "shard-000.tar", "w") as t:
        for f in files:
            t.add(f, arcname=f.name)
    pd.DataFrame({"id": [f.stem for f in files], "path": [f"imgs/{f.name}" for f in files]}).to_csv(
        tmp_path / "meta.csv", index=False
    )
    stores = {}
    sources = {
        "folder": tmp_path / "imgs",
        "zip": tmp_path / "osv",
        "tar": tmp_path / "shard-000.tar",
        "meta": tmp_path / "meta.csv",
    }
    for name, src in sources.items():
        extract([src], tmp_path / name, batch_size=4, workers=0)
        stores[name] = FeatureStore.open(tmp_path / name)
    ref = stores["folder"]
    for name, st in stores.items():
        assert st.ids.to_pylist() == ref.ids.to_pylist(), name
        assert np.array_equal(np.asarray(st.features), np.asarray(ref.features)), name


def test_inputs_and_store_mismatch_errors(tmp_path):
    make_images(tmp_path / "a", 2)
    make_images(tmp_path / "b", 2)
    with pytest.raises(InputError, match="appears twice"):
        extract([tmp_path / "a", tmp_path / "b"], tmp_path / "s", workers=0)
    extract([tmp_path / "a"], tmp_path / "s", workers=0)
    make_images(tmp_path / "a", 3)
    with pytest.raises(InputError, match="other inputs or another encoder"):
        extract([tmp_path / "a"], tmp_path / "s", workers=0)
    res = runner.invoke(app, ["extract", str(tmp_path / "nope"), "-o", str(tmp_path / "t")])
    assert res.exit_code == 2 and "does not exist" in res.stderr


def test_kill_and_resume_gives_every_image_exactly_once(tmp_path):
    make_images(tmp_path / "imgs", 96, seed=5)
    cmd = [
        sys.executable,
        "-m",
        "hierloc",
        "extract",
        str(tmp_path / "imgs"),
        "-o",
        str(tmp_path / "store"),
        "--batch-size",
        "4",
        "--commit-every",
        "1",
        "--workers",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = tmp_path / "store" / "manifest.json"
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        if manifest.exists():
            try:
                rows = json.loads(manifest.read_text())["rows"]
            except (json.JSONDecodeError, KeyError):
                rows = 0
            if rows >= 24:
                break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = json.loads(manifest.read_text())
    assert 0 < killed["rows"] < 96 and not killed["complete"], killed["rows"]
    committed = np.array(np.load(tmp_path / "store" / "features.npy")[: killed["rows"]])
    # rerun the same command
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    store = FeatureStore.open(tmp_path / "store")
    assert store.manifest["complete"] and len(store) == 96
    assert store.ids.to_pylist() == [f"img{i:04d}" for i in range(96)]  # each exactly once
    assert np.array_equal(np.asarray(store.features[: killed["rows"]]), committed)  # unchanged
    clean = extract([tmp_path / "imgs"], tmp_path / "clean", batch_size=4, workers=0)
    assert clean["rows"] == 96
    ref = FeatureStore.open(tmp_path / "clean")
    assert np.allclose(
        np.asarray(store.features, np.float32), np.asarray(ref.features, np.float32), atol=2e-3
    )


def test_torchrun_two_processes_equal_a_single_process_run(tmp_path):
    make_images(tmp_path / "imgs", 13, seed=9)
    (tmp_path / "imgs" / "img0005.jpg").write_bytes(b"")  # a reject in the middle
    cmd = torchrun(
        "extract",
        str(tmp_path / "imgs"),
        "-o",
        str(tmp_path / "dist"),
        "--workers",
        "0",
        "--batch-size",
        "4",
        "--commit-every",
        "1",
    )
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    single = extract([tmp_path / "imgs"], tmp_path / "single", batch_size=4, workers=0)
    a, b = FeatureStore.open(tmp_path / "dist"), FeatureStore.open(tmp_path / "single")
    assert a.manifest["complete"] and a.manifest["fingerprint"] == b.manifest["fingerprint"]
    assert a.ids.to_pylist() == b.ids.to_pylist() and len(a) == single["rows"] == 12
    assert np.allclose(
        np.asarray(a.features, np.float32), np.asarray(b.features, np.float32), atol=2e-3
    )
    ra = pd.read_csv(tmp_path / "dist" / "rejects.csv")
    rb = pd.read_csv(tmp_path / "single" / "rejects.csv")
    assert ra.to_dict() == rb.to_dict() and ra["id"].tolist() == ["img0005"]
    assert not (tmp_path / "dist" / ".ranks").exists()
