"""Commands never destroy their own input: an output that is (or holds) an input is refused,
``--overwrite`` replaces only an output of the same kind, and arguments are checked before any
work — each through the CLI, with exit status 2, one line, and the files byte-identical."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from hierloc.cli import app

runner = CliRunner()


def snapshot(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes."""
    path = Path(path)
    if path.is_file():
        return {path.name: path.read_bytes()}
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


def refused(args: list[str], *needles: str) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hierloc: error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def work(trained, tmp_path):
    """A private copy of the trained fixture (hierarchy h, store, run, model)."""
    for name in ("h", "store", "run", "model"):
        shutil.copytree(trained / name, tmp_path / name)
    shutil.copy(trained / "train.parquet", tmp_path / "train.parquet")
    return tmp_path


def test_baseline_output_equal_to_its_hierarchy_is_refused(work):
    before = snapshot(work / "h")
    for extra in ([], ["--overwrite"]):
        refused(
            [
                "train",
                "--model",
                "knn",
                "--hierarchy",
                str(work / "h"),
                "--features",
                str(work / "store"),
                "-o",
                str(work / "h"),
                *extra,
            ],
            "is the input",
        )
    assert snapshot(work / "h") == before


def test_baseline_output_holding_an_input_is_refused(work):
    """-o a folder that holds the feature store: replacing it would delete the store."""
    before = snapshot(work)
    refused(
        [
            "train",
            "--model",
            "knn",
            "--hierarchy",
            str(work / "h"),
            "--features",
            str(work / "store"),
            "-o",
            str(work),
            "--overwrite",
        ],
        "holds the input",
    )
    assert snapshot(work) == before


def test_existing_model_folder_is_replaced_only_with_overwrite(work):
    args = [
        "train",
        "--model",
        "knn",
        "--hierarchy",
        str(work / "h"),
        "--features",
        str(work / "store"),
        "-o",
        str(work / "model"),
    ]
    before = snapshot(work / "model")
    refused(args, "already exists", "--overwrite")
    assert snapshot(work / "model") == before
    res = runner.invoke(app, [*args, "--overwrite"])  # a model folder may replace a model folder
    assert res.exit_code == 0, res.output
    assert '"hierloc-baseline"' in (work / "model" / "manifest.json").read_text()


def test_overwrite_never_replaces_another_kind_of_folder(work):
    """--overwrite on a hierarchy (not an input here) or a folder of user files is refused."""
    other = work / "other-h"
    shutil.copytree(work / "h", other)
    mine = work / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes\n")
    for target, needle in ((other, "hierloc-hierarchy"), (mine, "not a hierloc output")):
        before = snapshot(target)
        refused(
            [
                "train",
                "--model",
                "knn",
                "--hierarchy",
                str(work / "h"),
                "--features",
                str(work / "store"),
                "-o",
                str(target),
                "--overwrite",
            ],
            needle,
        )
        refused(["index", str(work / "run"), "-o", str(target), "--overwrite"], needle)
        assert snapshot(target) == before


def test_training_run_into_an_input_or_a_foreign_folder_is_refused(work):
    before = snapshot(work / "h")
    refused(
        [
            "train",
            "--hierarchy",
            str(work / "h"),
            "--features",
            str(work / "store"),
            "-o",
            str(work / "h"),
        ],
        "is the input",
    )
    assert snapshot(work / "h") == before
    before = snapshot(work / "model")
    base = ["train", "--hierarchy", str(work / "h"), "--features", str(work / "store")]
    # a model folder from another run: replaced only with --overwrite
    refused([*base, "-o", str(work / "model")], "already exists", "--overwrite")
    assert snapshot(work / "model") == before and not (work / "model.run").exists()
    # a model folder given as the run folder, a hierarchy as the run folder
    refused([*base, "--run-dir", str(work / "model"), "-o", str(work / "m2")], "hierloc-index")
    refused([*base, "--run-dir", str(work / "h"), "-o", str(work / "m2")], "the input")
    # the run inside the model folder
    refused([*base, "--run-dir", str(work / "m2" / "run"), "-o", str(work / "m2")], "the input")
    assert snapshot(work / "model") == before and not (work / "m2").exists()


def test_index_into_its_own_run_is_refused(work):
    before = snapshot(work / "run")
    refused(["index", str(work / "run"), "-o", str(work / "run"), "--overwrite"], "the input")
    assert snapshot(work / "run") == before


def test_hierarchy_build_over_a_folder_holding_its_metadata_is_refused(work):
    folder = work / "meta"
    folder.mkdir()
    shutil.copy(work / "train.parquet", folder / "train.parquet")
    before = snapshot(folder)
    refused(
        [
            "hierarchy",
            "build",
            str(folder / "train.parquet"),
            "-o",
            str(folder),
            "--overwrite",
            "--gazetteer",
            "none",
        ],
        "holds the input",
    )
    assert snapshot(folder) == before


def test_bluemarble_overwrite_keeps_a_folder_holding_its_locations(tmp_path, monkeypatch):
    import hierloc.data.bluemarble as bm

    folder = tmp_path / "bm"
    folder.mkdir()
    locations = folder / "coordinates_100K.csv"
    locations.write_text("LAT,LON\n48.85,2.35\n")
    monkeypatch.setattr(bm, "gallery_path", lambda: locations)
    before = snapshot(folder)
    refused(["data", "bluemarble", "-o", str(folder), "--overwrite"], "holds the input")
    assert snapshot(folder) == before


def test_score_output_equal_to_an_input_is_refused(tmp_path):
    preds = tmp_path / "preds.csv"
    pd.DataFrame({"id": ["a", "b"], "latitude": [1.0, 2.0], "longitude": [3.0, 4.0]}).to_csv(
        preds, index=False
    )
    before = preds.read_bytes()
    refused(["score", str(preds), "--truth", str(preds), "-o", str(preds)], "is the input")
    assert preds.read_bytes() == before


def test_predict_never_overwrites_a_photo_and_checks_the_map_first(work):
    from PIL import Image

    photo = work / "photo.png"
    Image.new("RGB", (40, 30), (10, 120, 200)).save(photo)
    before = photo.read_bytes()
    refused(["predict", str(work / "model"), str(photo), "-o", str(photo)], "is the input")
    refused(["predict", str(work / "model"), str(photo), "--map", str(photo)], "is the input")
    assert photo.read_bytes() == before
    answers = work / "answers.csv"
    refused(
        [
            "predict",
            str(work / "model"),
            str(photo),
            "-o",
            str(answers),
            "--map",
            str(work / "map.gif"),
        ],
        ".html or .htm or .png",
    )
    assert not answers.exists()  # nothing written before the bad --map was seen


def test_evaluate_report_into_the_model_folder_itself_is_refused(work):
    before = snapshot(work / "model")
    refused(
        [
            "evaluate",
            str(work / "model"),
            "--data",
            str(work / "train.parquet"),
            "-o",
            str(work / "model"),
        ],
        "is the input",
    )
    assert snapshot(work / "model") == before


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--models", "knn,telepathy"], "unknown model 'telepathy'"),
        (["--models", "hierloc,knn", "--set", "optim.lr=fast"], "optim.lr"),
    ],
)
def test_compare_checks_every_model_before_training_any(work, extra, needle):
    out = work / "cmp"
    refused(
        [
            "compare",
            "--hierarchy",
            str(work / "h"),
            "--features",
            str(work / "store"),
            "--data",
            str(work / "train.parquet"),
            "-o",
            str(out),
            *extra,
        ],
        needle,
    )
    assert not out.exists()  # nothing trained, staged or written


def test_extract_overwrite_never_deletes_its_images_or_other_files(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(photos / "a.png")
    before = snapshot(tmp_path)
    for out in (photos, tmp_path):
        refused(["extract", str(photos), "-o", str(out), "--overwrite"], "the input")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me\n")
    refused(["extract", str(photos), "-o", str(mine), "--overwrite"], "not a hierloc output")
    assert (mine / "notes.txt").read_text() == "keep me\n"
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("mine")} == before


@pytest.mark.parametrize(
    "sets, needle",
    [
        (["optim.lr=[1,2]"], "optim.lr: [1, 2] is not a number"),
        (["optim.lr=.nan"], "optim.lr=nan: a finite number > 0"),
        (["optim.lr=-0.1"], "optim.lr=-0.1: a finite number > 0"),
        (["optim.batch_size=0"], "optim.batch_size=0: an integer ≥ 1"),
        (["optim.max_steps=-1"], "optim.max_steps=-1: an integer ≥ 1"),
        (["model.manifold=banana"], "model.manifold='banana': one of"),
        (["model.heads=3", "model.dim=16"], "model.heads=3: a divisor of dim (16)"),
        (["optim.schedule=linear"], "optim.schedule='linear': one of"),
        (["model.attention=maybe"], "model.attention: 'maybe' is not true or false"),
    ],
)
def test_bad_config_values_are_one_line_before_any_work(work, sets, needle):
    args = [
        "train",
        "--hierarchy",
        str(work / "h"),
        "--features",
        str(work / "store"),
        "-o",
        str(work / "new-run"),
    ]
    for s in sets:
        args += ["--set", s]
    refused(args, needle)
    assert not (work / "new-run").exists()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("- optim\n- model\n", "the top level must be a mapping"),
        ("optim: 3\n", "section 'optim' must be a mapping"),
    ],
)
def test_bad_config_files_are_named(work, text, needle):
    cfg = work / "run.yaml"
    cfg.write_text(text)
    refused(
        [
            "train",
            "--hierarchy",
            str(work / "h"),
            "--features",
            str(work / "store"),
            "--config",
            str(cfg),
            "-o",
            str(work / "new-run"),
        ],
        "run.yaml",
        needle,
    )
    assert not (work / "new-run").exists()


@pytest.mark.parametrize(
    "item, needle",
    [
        ("epochs=0", "epochs=0: an integer ≥ 1"),
        ("lr=.nan", "baseline.lr=nan: a finite number > 0"),
        ("epochs=2.5", "not an integer"),
        ("dropout=1", "dropout=1.0: a finite number ≥ 0"),
    ],
)
def test_bad_baseline_options_are_one_line(work, item, needle):
    refused(
        [
            "train",
            "--model",
            "classify",
            "--hierarchy",
            str(work / "h"),
            "--features",
            str(work / "store"),
            "-o",
            str(work / "cls"),
            "--set",
            item,
        ],
        needle,
    )
    assert not (work / "cls").exists()


def test_evaluate_counts_and_writes_rows_it_cannot_use(work):
    """A non-numeric latitude is a rejected row with its reason, never silently dropped."""
    import json

    df = pd.read_parquet(work / "train.parquet").iloc[:30].copy()
    df["latitude"] = df["latitude"].astype(object)
    df.loc[df.index[3], "latitude"] = "north-ish"
    df.to_csv(work / "eval.csv", index=False)
    res = runner.invoke(
        app,
        [
            "evaluate",
            str(work / "model"),
            "--data",
            str(work / "eval.csv"),
            "-o",
            str(work / "ev"),
            "-f",
            "json",
        ],
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((work / "ev" / "metrics.json").read_text())
    assert metrics["n"] == 29 and metrics["rejected"] == 1
    rejects = pd.read_csv(work / "ev" / "rejects.csv")
    assert rejects["id"].astype(str).tolist() == [str(df["id"].iloc[3])]
    assert "latitude" in rejects["reason"].iloc[0]


@pytest.mark.parametrize(
    "damage, args, needle",
    [
        ("h/entities.parquet", ["hierarchy", "stats", "{h}"], "h/entities.parquet: damaged"),
        (
            "model/points_0.npy",
            ["predict", "{model}", "{h}/../train.parquet"],
            "points_0.npy: damaged",
        ),
        (
            "model/query.safetensors",
            ["predict", "{model}", "{h}/../train.parquet"],
            "query.safetensors: damaged",
        ),
        (
            "run/LATEST/model.safetensors",
            ["index", "{run}", "-o", "{out}"],
            "model.safetensors: damaged",
        ),
    ],
)
def test_a_damaged_file_is_named_with_the_fix(work, damage, args, needle):
    if "LATEST" in damage:
        latest = sorted((work / "run").glob("ckpt-*"))[-1]
        damage = damage.replace("LATEST", latest.name)
    target = work / damage
    target.write_bytes(target.read_bytes()[:40])  # truncated
    fill = {
        "h": str(work / "h"),
        "model": str(work / "model"),
        "run": str(work / "run"),
        "out": str(work / "new-model"),
    }
    line = refused([a.format(**fill) for a in args], needle)
    assert "rebuild" in line or "train again" in line
    assert not (work / "new-model").exists()


def test_predict_with_only_unreadable_photos_says_so(work, monkeypatch):
    """No image readable: one line naming the rejects file, exit 2, no answers file; and the
    model answers an empty batch with an empty list (it used to fail inside beam search)."""
    import numpy as np

    import hierloc.locate
    from hierloc.locate import Rejected
    from hierloc.locate.hierloc import Geolocator

    geo = Geolocator.load(work / "model")
    assert geo.predict_features(np.zeros((0, geo.image_dim), np.float32)) == []

    class Unreadable:
        def predict_images(self, inputs, *, top_k, beam, ten_crop=False):
            return [], [Rejected("bad", "not an image (unrecognised format)")]

    monkeypatch.setattr(hierloc.locate, "load_locator", lambda model, device="cpu": Unreadable())
    res = runner.invoke(
        app, ["predict", str(work / "model"), str(work / "bad.jpg"), "-o", str(work / "out.csv")]
    )
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "hierloc: rejected bad: not an image (unrecognised format)"
    assert lines[-1].startswith("hierloc: error: none of the 1 images could be read")
    assert not (work / "out.csv").exists()
    assert "bad" in (work / "out.rejects.csv").read_text()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["predict", "m", "x.jpg", "--top-k", "0"], "Invalid value for '--top-k'"),
        (["predict", "--bogus"], "No such option: --bogus"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line_through_the_console_entry_point(argv, needle, capsys):
    from hierloc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hierloc: error: ") and needle in err[0], err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["bench", "extract", "--encoder", "efficientnet-lite9"], "unknown image encoder"),
        (["bench", "extract", "--device", "banana"], "--device 'banana'"),
        (["bench", "extract", "--images", "0"], "--images"),
        (["bench", "bluemarble", "--patches", "16,x"], "--patches"),
        (["bench", "bluemarble", "--patches", "4"], "between 8 and 512"),
        (["bench", "bluemarble", "--block", "-1"], "--block"),
        (["bench", "bluemarble", "--encoder", "nope"], "unknown image encoder"),
        (["bench", "train", "--set", "optim.lr=fast"], "optim.lr"),
        (["bench", "train", "--format", "xml"], "JSON only"),
        (["bench", "search", "--format", "csv"], "JSON only"),
        (["bench", "search", "--batch", "0"], "--batch"),
        (["bench", "geocode", "--gazetteer", "atlas"], "--gazetteer"),
        (["bench", "score", "--workdir", "{tmp}/missing"], "--workdir"),
        (["bench", "cells", "--rows", "10", "-o", "/"], "is a folder"),
    ],
)
def test_bench_option_values_are_checked_before_any_work(args, needle, capsys, tmp_path):
    """Each bad value: one line naming the option, exit 2 — before a benchmark starts (these
    would otherwise run for minutes), through the console entry point."""
    from hierloc.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([a.replace("{tmp}", str(tmp_path)) for a in args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hierloc: error: ") and needle in err[0], err
