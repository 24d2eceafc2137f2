"""Damaged and mismatched model folders, every family: each is refused before it loads, in one
line naming the file and the fix, exit 2 — never an internal error or a torch dump."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.locate import load_locator
from tests.helpers import set_options

runner = CliRunner()
BASELINE_SETS = {"classify": ["epochs=1"], "regress": ["epochs=1"]}


@pytest.fixture(scope="module")
def families(trained, toy, tmp_path_factory):
    """One good model folder per family, and the store each answers from."""
    from tests.test_geosurge import TOY, _train_args

    root = tmp_path_factory.mktemp("families")
    out = {"hierloc": (trained / "model", trained / "store")}
    for name in ("knn", "classify", "regress", "zeroshot", "prior"):
        args = ["train", "--model", name, "--hierarchy", str(trained / "h")]
        args += ["--features", str(trained / "store"), "-o", str(root / name)]
        res = runner.invoke(app, [*args, *set_options(BASELINE_SETS.get(name, []))])
        assert res.exit_code == 0, res.output
        out[name] = (root / name, trained / "store")
    res = runner.invoke(
        app, _train_args(toy, root / "gs-run", [*TOY, "optim.max_steps=2"], val=False)
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["index", str(root / "gs-run"), "-o", str(root / "geosurge")])
    assert res.exit_code == 0, res.output
    out["geosurge"] = (root / "geosurge", toy / "val.parquet")  # scored from its stores
    return out


def answer(folder, source):
    """``hierloc predict FOLDER STORE`` (a feature store), or ``hierloc evaluate FOLDER --data
    FILE`` (GeoSURGE answers from its token and semantic stores)."""
    if str(source).endswith(".parquet"):
        out = folder.parent / f"{folder.name}-eval"
        return runner.invoke(app, ["evaluate", str(folder), "--data", str(source), "-o", str(out)])
    return runner.invoke(app, ["predict", str(folder), str(source), "--top-k", "1", "-f", "csv"])


def damaged(families, family, tmp_path):
    """A copy of ``family``'s folder to damage, and the store it answers from."""
    folder, store = families[family]
    copy = tmp_path / family
    shutil.copytree(folder, copy)
    return copy, store


def refused(folder, store, *needles):
    """``hierloc predict`` on the folder: exit 2, one line naming each of ``needles``."""
    res = answer(folder, store)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("hierloc: error: "), res.output
    assert "internal error" not in res.output and "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


FAMILIES = ("hierloc", "geosurge", "knn", "classify", "regress", "zeroshot", "prior")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_file_missing_truncated_or_garbage_is_named(families, family, tmp_path):
    """For every file of the folder (listed on disk, not from the spec): removed, cut in half
    (binary files) or overwritten with garbage, the folder is refused naming that file; the
    intact folder answers."""
    folder, store = families[family]
    res = answer(folder, store)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    assert "manifest.json" in names and len(names) >= 3
    for k, name in enumerate(names):
        for damage in ("missing", "truncated", "garbage"):
            if damage == "truncated" and name.endswith((".yaml", ".json")):
                continue  # half a YAML/JSON text may still parse: garbage covers them
            copy, _ = damaged(families, family, tmp_path / f"{k}-{damage}")
            target = copy / name
            if damage == "missing":
                target.unlink()
            elif damage == "truncated":
                data = target.read_bytes()
                target.write_bytes(data[: len(data) // 2])
            else:
                target.write_bytes(b"\x00\xffnot what it should be: [\n")
            refused(copy, store, name)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_required_manifest_key_is_named(families, family, tmp_path):
    folder, store = families[family]
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in [k for k in manifest if k not in ("encoder", "checkpoint", "semantic")]:
        copy, _ = damaged(families, family, tmp_path / key)
        broken = {k: v for k, v in manifest.items() if k != key}
        (copy / "manifest.json").write_text(json.dumps(broken))
        res = answer(copy, store)
        if res.exit_code == 0:
            continue  # a key the family does not need to answer (a source path)
        assert res.exit_code == 2, (key, res.output)
        assert "internal error" not in res.output and len(res.output.strip().splitlines()) == 1
        assert "manifest.json" in res.output or key in res.output, (key, res.output)


def _save_like(path, array):
    np.save(path, array)


def test_mismatched_arrays_and_weights(families, tmp_path):
    """The cases a user hits with folders assembled from different runs."""
    # knn: a gallery_city shorter than the gallery
    copy, store = damaged(families, "knn", tmp_path / "a")
    city = np.load(copy / "gallery_city.npy")
    _save_like(copy / "gallery_city.npy", city[:-3])
    refused(copy, store, "gallery_city.npy", f"{len(city) - 3}", f"{len(city)}")
    # knn: a city row past the last city
    copy, store = damaged(families, "knn", tmp_path / "b")
    city = np.load(copy / "gallery_city.npy")
    city[0] = 10**6
    _save_like(copy / "gallery_city.npy", city)
    refused(copy, store, "gallery_city.npy", "1000000")
    # zeroshot: city embeddings of another width
    copy, store = damaged(families, "zeroshot", tmp_path / "c")
    mean = np.load(copy / "city_mean.npy")
    _save_like(copy / "city_mean.npy", np.zeros((len(mean), mean.shape[1] + 4), mean.dtype))
    refused(copy, store, "city_mean.npy", "image_dim")
    # classify: a manifest city count that does not fit the weights (nor the entity table)
    copy, store = damaged(families, "classify", tmp_path / "d")
    m = json.loads((copy / "manifest.json").read_text())
    m["cities"] += 1
    (copy / "manifest.json").write_text(json.dumps(m))
    refused(copy, store, "model.safetensors", "shape")
    # regress: no config in the manifest
    copy, store = damaged(families, "regress", tmp_path / "e")
    m = json.loads((copy / "manifest.json").read_text())
    del m["config"]
    (copy / "manifest.json").write_text(json.dumps(m))
    refused(copy, store, "manifest.json", "'config'")
    # a wrong dtype: HierLoc points stored as integers
    copy, store = damaged(families, "hierloc", tmp_path / "f")
    _save_like(copy / "points_0.npy", np.load(copy / "points_0.npy").astype(np.int32))
    refused(copy, store, "points_0.npy", "int32")
    # HierLoc: config.yaml of another model width than the weights
    copy, store = damaged(families, "hierloc", tmp_path / "g")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"]["hidden"] = int(cfg["model"].get("hidden", 32)) * 2
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(copy, store, "query.safetensors", "config")
    # GeoSURGE: a manifest without inputs, cell counts that do not fit, a deeper config
    copy, store = damaged(families, "geosurge", tmp_path / "h")
    m = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({k: v for k, v in m.items() if k != "inputs"}))
    refused(copy, store, "manifest.json", "'inputs'")
    copy, store = damaged(families, "geosurge", tmp_path / "i")
    (copy / "manifest.json").write_text(json.dumps(m | {"cells": [c + 1 for c in m["cells"]]}))
    refused(copy, store, "model.safetensors", "shape")
    copy, store = damaged(families, "geosurge", tmp_path / "j")
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["model"]["depth"] = int(cfg["model"]["depth"]) + 1
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    refused(copy, store, "config.yaml", "depth")
    # the intact folders still load through the library as well
    for folder, _ in families.values():
        assert load_locator(folder).manifest["format"]


def test_bad_training_inputs_are_one_line_and_leave_nothing(trained, toy, tmp_path):
    """Training, cells, compare and ablate inputs that do not fit: one line, exit 2, no
    output folder left behind."""
    from tests.test_geosurge import TOY

    h, store = str(trained / "h"), str(trained / "store")
    cells, tok, sem = str(toy / "cells"), str(toy / "tok"), str(toy / "sem")
    no_assign = tmp_path / "cells-without-assignments"
    shutil.copytree(toy / "cells", no_assign)
    (no_assign / "assignments.parquet").unlink()
    (tmp_path / "bad.csv").write_text("id,latitude,longitude\na,100,5\nb,x,3\n")
    gs = ["train", "--model", "geosurge", "--features", tok, "--semantic", sem]
    small = [*set_options([*TOY, "optim.max_steps=1"])]
    cmp = ["compare", "--hierarchy", h, "--features", store, "--data", str(toy / "val.parquet")]
    ab = ["ablate", "--hierarchy", h, "--features", store, "--data", str(trained / "train.parquet")]
    cases = [
        ([*gs, "--cells", cells, *small, "--set", "model.depth=9"], "model.depth 9"),
        ([*gs, "--cells", str(no_assign), *small], "assignments.parquet"),
        (["cells", "build", str(toy / "train.parquet"), "--tau-min", "100000"], "--tau-min"),
        (["cells", "build", str(tmp_path / "bad.csv")], "no usable rows"),
        (["train", "--model", "knn", "--hierarchy", h, "--features", store,
          "--config", str(tmp_path / "nope.yaml")], "nope.yaml"),
        (["train", "--model", "knn", "--hierarchy", h, "--features", store,
          "--val", str(toy / "val.parquet")], "--val"),
        ([*cmp, "--models", "geosurge", "--cells", cells, "--tokens", tok], "--semantic"),
        ([*cmp, "--models", "geosurge", "--cells", cells, "--tokens", tok, "--semantic", sem,
          "--geosurge-set", "optim.nope=1"], "optim.nope"),
        ([*ab, "--tables", ","], "--tables"),
        ([*ab, "--tables", "VIII", "--cells", cells, "--tokens", tok], "--semantic"),
    ]  # fmt: skip
    for k, (args, needle) in enumerate(cases):
        out = tmp_path / f"out{k}"
        res = runner.invoke(app, [*args, "-o", str(out)])
        lines = [ln for ln in res.output.splitlines() if ln.strip() and "INFO" not in ln]
        assert res.exit_code == 2, (args, res.output)
        assert len(lines) == 1 and needle in lines[0], (args, res.output)
        assert "internal error" not in res.output
        assert not out.exists(), (args, sorted(p.name for p in out.iterdir()))


CRASH = """
import os, signal, sys
from pathlib import Path
from hierloc.data import writers

out, when = Path(sys.argv[1]), sys.argv[2]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if when == "before-swap":
    writers._exchange = die
elif when == "after-swap":
    swap = writers._exchange
    writers._exchange = lambda a, b: (swap(a, b), die())
elif when == "while-flushing":
    writers.os.fsync = die
with writers.staged_folder(out, True, None) as tmp:
    (tmp / "manifest.json").write_text('{"format": "x"}')
    (tmp / "value").write_text("new")
"""


@pytest.mark.parametrize(
    ("when", "left"), [("while-flushing", "old"), ("before-swap", "old"), ("after-swap", "new")]
)
def test_a_folder_replaced_by_a_killed_process_is_the_old_or_the_new(tmp_path, when, left):
    """SIGKILL while the new folder is flushed, just before the swap and just after it: the
    output folder is whole — the old one or the new one — never missing or mixed."""
    import subprocess
    import sys

    out = tmp_path / "model"
    out.mkdir()
    (out / "manifest.json").write_text('{"format": "x"}')
    (out / "value").write_text("old")
    run = subprocess.run([sys.executable, "-c", CRASH, str(out), when], capture_output=True)
    assert run.returncode == -9, run.stderr.decode()[-500:]
    assert (out / "value").read_text() == left
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "value"]
