"""GeoSURGE end to end: gradients, product inference vs brute force, cells lookup vs the cells
builder's own assignment, semantic stores and their rejects, token extraction, training through
the shared trainer (resume, early stopping), model folders, evaluate and predict."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.data.features import FeatureStore, write_feature_store
from hierloc.losses import partition_loss
from hierloc.models.geosurge import (
    GeoSurge,
    GeoSurgeConfig,
    GeoSurgeInputs,
    LatentCrossAttention,
    ancestors,
    product_scores,
)
from tests.helpers import assert_every_parameter_learns, document_rows, set_options, torchrun
from tests.test_hierarchy import pseudo_photos

runner = CliRunner()
INPUTS = GeoSurgeInputs(tokens=17, token_dim=24, grid=(4, 4), cls_token=True, classes=5, map_size=8)


def _model(**kw) -> GeoSurge:
    cfg = GeoSurgeConfig(
        embed_dim=16, depth=3, blocks=kw.pop("blocks", 2), fusion_dim=16, heads=2, latent=8, **kw
    )
    return GeoSurge(cfg, INPUTS, [2, 4, 8])


@pytest.mark.parametrize("head", ["cells", "classify"])
def test_every_parameter_gets_a_gradient(head):
    torch.manual_seed(0)
    model = _model(head=head, rgb_dim=12)
    tokens = torch.randn(6, 17 * 24)
    maps = torch.randint(0, 5, (6, 64), dtype=torch.uint8)
    targets = torch.tensor([[0, 1, 3], [1, 2, 5], [0, 0, 0], [1, 3, 7], [0, -1, -1], [1, 2, 4]])
    loss, parts = partition_loss(model(tokens, maps), targets)
    loss.backward()
    assert len(parts) == 3 and math.isclose(float(loss.detach()), sum(parts), rel_tol=1e-6)
    for name, p in model.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_partition_loss_is_cross_entropy_without_dropped_samples():
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(5, 3, generator=g), torch.randn(5, 6, generator=g)]
    t = torch.tensor([[0, 5], [1, -1], [2, 0], [0, -1], [1, 3]])
    total, parts = partition_loss(logits, t)
    # by hand: mean of −log softmax at the target over the rows with a target
    ref = []
    for lg, col in zip(logits, t.T, strict=True):
        rows = [(r, int(c)) for r, c in enumerate(col) if c >= 0]
        ref.append(np.mean([-(lg[r, c] - torch.logsumexp(lg[r], 0)).item() for r, c in rows]))
    np.testing.assert_allclose(parts, ref, rtol=1e-5)
    assert math.isclose(float(total), sum(ref), rel_tol=1e-5)


def test_product_inference_equals_brute_force_on_a_small_tree():
    parents = [np.array([-1, -1]), np.array([0, 0, 1]), np.array([0, 1, 1, 2, 2, 2])]
    g = torch.Generator().manual_seed(3)
    probs = [torch.softmax(torch.randn(4, n, generator=g), 1) for n in (2, 3, 6)]
    got = product_scores([p.log() for p in probs], ancestors(parents))
    for b in range(4):
        for leaf in range(6):  # walk up the tree and multiply
            mid = parents[2][leaf]
            top = parents[1][mid]
            want = probs[2][b, leaf] * probs[1][b, mid] * probs[0][b, top]
            assert math.isclose(float(got[b, leaf].exp()), float(want), rel_tol=1e-5)
    with pytest.raises(ValueError, match="nested"):
        ancestors([np.array([-1]), np.array([0, -1])])


def test_cell_lookup_agrees_with_s2sphere_containment(tmp_path):
    """Each point's cell in every partition, checked with s2sphere (an independent S2
    implementation): the cell found contains the point's leaf cell, and a point left out
    (``-1``) lies in none of the partition's cells. The builder's own assignment agrees."""
    import s2sphere

    from hierloc.data.cells import build_cells, locate_cells, partitions

    df = pseudo_photos(600, seed=5)
    df.to_parquet(tmp_path / "m.parquet")
    build_cells(tmp_path / "m.parquet", tmp_path / "cells", tau_max=(400, 100, 30), tau_min=5)
    frame = pd.read_parquet(tmp_path / "cells" / "cells.parquet")
    parts = partitions(frame)
    lat, lon = df["latitude"].to_numpy(), df["longitude"].to_numpy()
    got = locate_cells(parts, lat, lon)
    for n in range(len(df)):
        leaf = s2sphere.CellId.from_lat_lng(s2sphere.LatLng.from_degrees(lat[n], lon[n]))
        for p, part in enumerate(parts):
            holders = [
                r
                for r, cid in enumerate(part.ids.tolist())
                if s2sphere.CellId(int(cid)).contains(leaf)
            ]
            assert holders == ([] if got[n, p] < 0 else [got[n, p]]), (n, p)
    assign = pd.read_parquet(tmp_path / "cells" / "assignments.parquet")
    np.testing.assert_array_equal(got, assign[["p0", "p1", "p2"]].to_numpy())
    assert (got[:, -1] == -1).any() and (got >= 0).any()  # both kinds occur


def test_semantic_store_from_files_with_rejects(tmp_path):
    from PIL import Image

    from hierloc.data.semantic import build_semantic_store

    rng = np.random.default_rng(0)
    rows = []
    for i in range(5):
        m = rng.integers(0, 3, (32, 32)).astype(np.uint8)
        Image.fromarray(m, mode="L").save(tmp_path / f"m{i}.png")
        rows.append({"id": f"a{i}", "semantic_path": f"m{i}.png"})
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((8, 8), 7, np.uint8), mode="L").save(tmp_path / "big.png")
    rows += [
        {"id": "rgb", "semantic_path": "rgb.png"},
        {"id": "big", "semantic_path": "big.png"},
        {"id": "gone", "semantic_path": "missing.png"},
    ]
    pd.DataFrame(rows).to_parquet(tmp_path / "meta.parquet")
    summary = build_semantic_store(
        tmp_path / "meta.parquet", tmp_path / "sem", "files", size=8, classes=("a", "b", "c")
    )
    assert summary["rows"] == 5 and summary["rejected"] == 3
    reasons = pd.read_csv(tmp_path / "sem" / "rejects.csv").set_index("id")["reason"]
    assert "RGB" in reasons["rgb"] and "outside 0–2" in reasons["big"]
    assert reasons["gone"].startswith("unreadable")
    store = FeatureStore.open(tmp_path / "sem")
    assert store.features.dtype == np.uint8
    # nearest-neighbour downsampling by 4: PIL's NEAREST picks the same pixel centres
    ref = np.asarray(Image.open(tmp_path / "m2.png").resize((8, 8), Image.NEAREST))
    np.testing.assert_array_equal(np.asarray(store.features[2]).reshape(8, 8), ref)
    # the command: maps cut as efficientnet-lite0 cuts its images (32 px → resize 256, centre
    # crop 224 → the central 28 px), then nearest-resized
    res = runner.invoke(
        app,
        [
            "semantic",
            str(tmp_path / "meta.parquet"),
            "-o",
            str(tmp_path / "sem2"),
            "--provider",
            "files",
            "--size",
            "8",
            "--classes",
            "a,b,c",
            "--encoder",
            "efficientnet-lite0",
        ],
    )
    assert res.exit_code == 0, res.output
    cut = FeatureStore.open(tmp_path / "sem2")
    assert len(cut) == 5 and cut.manifest["encoder"]["crop"]
    ref = Image.open(tmp_path / "m2.png").crop((2, 2, 30, 30)).resize((8, 8), Image.NEAREST)
    np.testing.assert_array_equal(np.asarray(cut.features[2]).reshape(8, 8), np.asarray(ref))


def test_extract_tokens_equals_the_encoders_tokens(tmp_path):
    from PIL import Image

    from hierloc.data.extract import extract
    from hierloc.encoders import create_image_encoder

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"im{i}.png"
        )
    (tmp_path / "bad.png").write_bytes(b"not an image")
    summary = extract([tmp_path], tmp_path / "tok", workers=0, tokens=True)
    assert summary["rows"] == 3 and summary["rejected"] == 1
    store = FeatureStore.open(tmp_path / "tok")
    enc = store.manifest["encoder"]
    assert enc["output"] == "tokens" and enc["tokens"] == [49, 1280]
    assert enc["token_grid"] == [7, 7] and enc["cls_token"] is False
    torch_enc = create_image_encoder("efficientnet-lite0").eval()
    with Image.open(tmp_path / "im1.png") as im:
        x = torch_enc.preprocess(im.convert("RGB"))[None]
    with torch.no_grad():
        ref = torch_enc.tokens(x).flatten(1).numpy()[0]
    row = list(store.ids.to_pylist()).index("im1")
    np.testing.assert_allclose(
        np.asarray(store.features[row], np.float32), ref, atol=2e-2, rtol=1e-2
    )


def test_ten_crop_is_the_standard_geometry():
    """torchvision's TenCrop after Resize, written out: the image resized (shorter side to
    size / crop_pct), the size × size crops at the four corners and the centre (its offsets
    rounded as torchvision rounds them), each also mirrored — one crop each, not a crop of a
    crop."""
    from PIL import Image

    from hierloc.encoders.base import Preprocess

    pre = Preprocess(size=32, crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1))
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (45, 61, 3), dtype=np.uint8))
    x, boxes = pre.ten_crop(img)
    assert x.shape == (10, 3, 32, 32) and len(boxes) == 10
    short = round(32 / 0.875)  # 37
    nw, nh = round(61 * short / 45), short
    big = img.resize((nw, nh), Image.BICUBIC)
    top_c, left_c = int(round((nh - 32) / 2.0)), int(round((nw - 32) / 2.0))
    want = {}
    for left, top in ((0, 0), (nw - 32, 0), (0, nh - 32), (nw - 32, nh - 32), (left_c, top_c)):
        crop = big.crop((left, top, left + 32, top + 32))
        key = (left / nw, top / nh, (left + 32) / nw, (top + 32) / nh)
        want[key, False] = np.asarray(crop, np.float32) / 255
        want[key, True] = np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT), np.float32) / 255
    got = {(tuple(b), f): x[k].numpy().transpose(1, 2, 0) for k, (b, f) in enumerate(boxes)}
    assert set(got) == set(want)
    for key, arr in want.items():
        np.testing.assert_allclose(got[key], arr, atol=1e-6)


# -- training, model folder, evaluation ------------------------------------------------------
def _toy_inputs(root, df, rng):
    """Tokens whose CLS encodes the location (+ noise) and maps of 3 classes."""
    n = len(df)
    lat, lon = np.deg2rad(df["latitude"].to_numpy()), np.deg2rad(df["longitude"].to_numpy())
    tok = rng.normal(size=(n, 17, 24)) * 0.1
    tok[:, 0, :3] = (
        np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], 1) * 3
    )
    desc = {
        "name": "toy",
        "output": "tokens",
        "tokens": [17, 24],
        "token_grid": [4, 4],
        "cls_token": True,
    }
    write_feature_store(root / "tok", df["id"].to_numpy(), tok.reshape(n, -1), encoder=desc)
    maps = rng.integers(0, 3, (n, 64))
    write_feature_store(
        root / "sem",
        df["id"].to_numpy(),
        maps,
        dtype="uint8",
        encoder={"name": "semantic:files", "classes": ["a", "b", "c"], "map_size": 8},
    )


TOY = [
    "model.embed_dim=16",
    "model.fusion_dim=16",
    "model.heads=2",
    "model.latent=8",
    "model.blocks=1",
    "model.depth=3",
    "optim.batch_size=64",
    "optim.lr=3e-3",
    "run.val_every=4",
    "run.checkpoint_every=4",
]


def build_toy(root):
    """The toy GeoSURGE inputs under ``root``: tokens, maps, a train/val split and cells (the
    ``toy`` fixture, conftest.py)."""
    from hierloc.data.cells import build_cells

    df = pseudo_photos(600, seed=8)
    rng = np.random.default_rng(0)
    _toy_inputs(root, df, rng)
    df.iloc[:500].to_parquet(root / "train.parquet")
    df.iloc[500:].to_parquet(root / "val.parquet")
    build_cells(root / "train.parquet", root / "cells", tau_max=(200, 60, 20), tau_min=3)
    return root


def _train_args(root, out, sets, val: bool = True) -> list[str]:
    """``hierloc train --model geosurge`` on the toy's cells, tokens and maps (and its
    validation split), the run folder ``out`` and its model folder beside it (``out-model``),
    with ``--set`` for each of ``sets``."""
    args = ["train", "--model", "geosurge", "--cells", str(root / "cells")]
    args += ["--features", str(root / "tok"), "--semantic", str(root / "sem")]
    if val:
        args += ["--val", str(root / "val.parquet")]
    model = Path(out).with_name(Path(out).name + "-model")
    return [*args, "--run-dir", str(out), "-o", str(model), *set_options(sets)]


def _train(root, out, steps, extra=()):
    return runner.invoke(app, _train_args(root, out, [*TOY, f"optim.max_steps={steps}", *extra]))


def test_train_resume_is_exact_and_model_folder_answers(toy, tmp_path):
    from safetensors.torch import load_file

    res = _train(toy, tmp_path / "a", 8)
    assert res.exit_code == 0, res.output
    assert _train(toy, tmp_path / "b", 4).exit_code == 0
    res = _train(toy, tmp_path / "b", 8)  # resumes from step 4
    assert res.exit_code == 0 and "resuming" in res.output
    a = load_file(str(tmp_path / "a" / "ckpt-00000008" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000008" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    metrics = [
        json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert "val_geoscore" in metrics[3] and len(metrics[0]["tau"]) == 3

    refused = runner.invoke(
        app, ["index", str(tmp_path / "a"), "-o", str(tmp_path / "m16"), "--half"]
    )
    assert refused.exit_code == 2 and "half: not an option for geosurge runs" in refused.stderr
    assert not (tmp_path / "m16").exists()
    res = runner.invoke(app, ["index", str(tmp_path / "a"), "-o", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    from hierloc.locate.geosurge import GeoSurgeLocator

    loc = GeoSurgeLocator.load(tmp_path / "model")
    ids = pd.read_parquet(toy / "val.parquet")["id"].to_numpy()[:20]
    inputs, ok = loc.inputs_for(ids)
    assert ok.all()
    preds = loc.predict_features(inputs, ids=ids, top_k=3)
    # brute force from the checkpoint: per leaf, the product of the partitions' probabilities
    model = loc.model
    with torch.no_grad():
        lp = [
            torch.log_softmax(v, 1)
            for v in model(torch.from_numpy(inputs[0]), torch.from_numpy(inputs[1]).long())
        ]
    cells = pd.read_parquet(tmp_path / "model" / "cells.parquet")
    leaf = cells[cells["partition"] == 2].sort_values("row")
    par = {
        p: cells[cells["partition"] == p].sort_values("row")["parent_row"].to_numpy()
        for p in (1, 2)
    }
    for b, pred in enumerate(preds):
        best, best_row = -np.inf, -1
        for r in range(len(leaf)):
            m = par[2][r]
            s = float(lp[2][b, r] + lp[1][b, m] + lp[0][b, par[1][m]])
            if s > best:
                best, best_row = s, r
        a0 = pred.best
        assert math.isclose(a0.score, best, rel_tol=1e-5, abs_tol=1e-5)
        assert math.isclose(a0.latitude, leaf["mean_lat"].iloc[best_row], abs_tol=1e-9)
        assert [p.level for p in a0.places] == ["country", "region", "subregion", "city"]
        assert a0.places[0].entity_id.isupper() and 0 < a0.confidence <= 1

    res = runner.invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "model"),
            "--data",
            str(toy / "val.parquet"),
            "-o",
            str(tmp_path / "eval"),
        ],
    )
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["n"] == 100 and 0 <= m["entity"]["acc_country"] <= 1


def test_early_stopping_after_patience_validations(toy, tmp_path):
    """With a vanishing lr (1e-12: a learning rate must be > 0) the validation GeoScore never
    improves: training stops at the validation ``patience`` after the first, and a rerun does
    not resume past it."""
    extra = ["optim.lr=1e-12", "run.patience=2"]
    res = _train(toy, tmp_path / "r", 40, extra)
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().split("\n")
    steps = [json.loads(x) for x in lines if x]
    assert steps[-1]["step"] == 12 and steps[-1].get("early_stop")
    res = _train(toy, tmp_path / "r", 40, extra)
    assert res.exit_code == 0
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().split("\n")) == len(lines)


def test_early_stopping_waits_four_epochs_by_default(toy, tmp_path):
    """GeoSURGE's defaults are the paper's rule, early stopping after 4 epochs without
    improvement: one validation per epoch (500 training rows at batch 64 are 7 steps), so with a
    vanishing lr the run validates at 7, 14, …, sets its best at the first and stops at the
    fifth (7 + 4 × 7 = 35), whatever the step count of an epoch."""
    sets = [s for s in TOY if not s.startswith("run.val_every=")]
    res = runner.invoke(
        app, _train_args(toy, tmp_path / "r", [*sets, "optim.max_steps=60", "optim.lr=1e-12"])
    )
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    epoch = len(pd.read_parquet(toy / "train.parquet")) // 64
    assert [r["step"] for r in rows if "val_geoscore" in r] == [epoch * k for k in range(1, 6)]
    assert rows[-1]["step"] == 5 * epoch and rows[-1].get("early_stop")
    res = _train(toy, tmp_path / "bad", 2, ["run.val_every=weekly"])
    assert res.exit_code == 2 and "run.val_every" in res.output and "epoch" in res.output
    assert "Traceback" not in res.output


def test_clear_errors_for_wrong_inputs(toy, tmp_path):
    res = _train(toy, tmp_path / "x", 2, ["model.depth=9"])
    assert res.exit_code != 0 and "depth" in res.output and "Traceback" not in res.output
    args = [
        "train",
        "--model",
        "geosurge",
        "--cells",
        str(toy / "cells"),
        "--features",
        str(toy / "tok"),
        "-o",
        str(tmp_path / "y"),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and "--semantic" in res.output
    res = runner.invoke(
        app, [*args[:-2], "--semantic", str(toy / "tok"), "-o", str(tmp_path / "z")]
    )
    assert res.exit_code != 0 and "not a semantic map store" in res.output


def test_ablate_geosurge_tables(toy, tmp_path):
    """Tables VI–VIII: every row evaluated; the base config trained once for all three; the
    depth and block variants really train what their rows say."""
    from hierloc.data.cells import build_cells

    build_cells(
        toy / "train.parquet",
        tmp_path / "cells7",
        tau_max=(300, 200, 120, 80, 50, 30, 20),
        tau_min=3,
    )
    args = [
        "ablate",
        "--hierarchy",
        str(toy / "unused"),
        "--features",
        str(toy / "tok"),
        "--data",
        str(toy / "val.parquet"),
        "--val",
        str(toy / "val.parquet"),
        "-o",
        str(tmp_path / "abl"),
        "--tables",
        "VI,VII,VIII",
        "--cells",
        str(tmp_path / "cells7"),
        "--tokens",
        str(toy / "tok"),
        "--semantic",
        str(toy / "sem"),
    ]
    base = [s for s in TOY if not s.startswith(("model.depth", "model.blocks"))]
    for s in [*base, "optim.max_steps=2", "run.val_every=2"]:
        args += ["--geosurge-set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "abl" / "ablation.json").read_text())
    assert [r["label"] for r in results["VII"]] == [f"depth {d}" for d in (1, 3, 5, 7)]
    assert [r["variant"] for r in results["VIII"]] == [
        "gs-blocks0",
        "gs-blocks1",
        "gs-blocks2",
        "gs-base",
    ]
    assert [r["paper_best"] for r in results["VI"]] == [False, True]
    cfg = (tmp_path / "abl" / "runs" / "gs-blocks0" / "run" / "config.yaml").read_text()
    assert "blocks: 0" in cfg
    runs = sorted(p.name for p in (tmp_path / "abl" / "runs").iterdir())
    assert runs == sorted(
        [
            "gs-classify",
            "gs-base",
            "gs-depth1",
            "gs-depth3",
            "gs-depth5",
            "gs-blocks0",
            "gs-blocks1",
            "gs-blocks2",
        ]
    )
    man = json.loads(
        (tmp_path / "abl" / "runs" / "gs-depth1" / "model" / "manifest.json").read_text()
    )
    assert man["depth"] == 1 and len(man["cells"]) == 1
    md = (tmp_path / "abl" / "ablation.md").read_text()
    assert "## Table VIII (GeoSURGE)" in md and "no fusion" in md


def test_predict_from_images_equals_predict_from_stores(tmp_path):
    """hierloc predict on images (tokens by the model's encoder, maps by its provider from the
    metadata's map column) gives the answers the precomputed stores give; --ten-crop answers
    every image too; an image without a map is rejected with its reason."""
    from PIL import Image

    from hierloc.data.cells import build_cells
    from hierloc.data.extract import extract
    from hierloc.data.semantic import build_semantic_store
    from hierloc.locate.geosurge import GeoSurgeLocator

    df = pseudo_photos(40, seed=2)
    rng = np.random.default_rng(1)
    (tmp_path / "img").mkdir()
    paths, maps = [], []
    for _i, r in df.iterrows():
        px = np.full(
            (32, 32, 3), [int(r.latitude + 90), int(r.longitude + 180) % 256, 60], np.uint8
        )
        px[:16] = rng.integers(0, 255, (16, 32, 3))
        Image.fromarray(px).save(tmp_path / "img" / f"{r.id}.png")
        Image.fromarray(rng.integers(0, 3, (32, 32)).astype(np.uint8), mode="L").save(
            tmp_path / "img" / f"{r.id}.map.png"
        )
        paths.append(f"img/{r.id}.png")
        maps.append(f"img/{r.id}.map.png")
    df["path"], df["semantic_path"] = paths, maps
    df.to_parquet(tmp_path / "meta.parquet")
    extract(
        [tmp_path / "meta.parquet"],
        tmp_path / "tok",
        encoder="efficientnet-lite0",
        workers=0,
        tokens=True,
    )
    from hierloc.encoders import create_image_encoder

    build_semantic_store(
        tmp_path / "meta.parquet",
        tmp_path / "sem",
        "files",
        size=28,
        classes=("a", "b", "c"),
        crop=create_image_encoder("efficientnet-lite0").preprocess,
    )
    build_cells(tmp_path / "meta.parquet", tmp_path / "cells", tau_max=(20, 10), tau_min=2)
    args = [
        "train",
        "--model",
        "geosurge",
        "--cells",
        str(tmp_path / "cells"),
        "--features",
        str(tmp_path / "tok"),
        "--semantic",
        str(tmp_path / "sem"),
        "--run-dir",
        str(tmp_path / "run"),
        "-o",
        str(tmp_path / "model"),
    ]
    for s in [
        "model.rgb_dim=8",
        "model.embed_dim=16",
        "model.fusion_dim=16",
        "model.heads=2",
        "model.latent=8",
        "model.blocks=2",
        "model.depth=2",
        "optim.batch_size=16",
        "optim.max_steps=3",
    ]:
        args += ["--set", s]
    res = runner.invoke(app, args)  # the run and its model folder
    assert res.exit_code == 0, res.output
    loc = GeoSurgeLocator.load(tmp_path / "model")
    ids = df["id"].to_numpy()
    inputs, ok = loc.inputs_for(ids)
    from_stores = loc.predict_features(inputs, ids=ids[ok], top_k=2)
    df.iloc[:5].drop(columns="semantic_path").assign(semantic_path="img/none.png").to_parquet(
        tmp_path / "nomap.parquet"
    )
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "model"),
            str(tmp_path / "meta.parquet"),
            "-f",
            "json",
            "--top-k",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    rows = document_rows(json.loads(res.output))
    top = {r["id"]: r for r in rows if r["rank"] == 1}
    assert len(top) == len(from_stores) == 40
    for p in from_stores:  # features stored as float16: the same answers, scores to ~1e-2
        assert top[p.id]["latitude"] == pytest.approx(p.best.latitude, abs=1e-9)
        assert top[p.id]["score"] == pytest.approx(p.best.score, abs=5e-2)
        assert top[p.id]["country"] == p.best.places[0].name
    res = runner.invoke(
        app,
        [
            "predict",
            str(tmp_path / "model"),
            str(tmp_path / "meta.parquet"),
            "-f",
            "json",
            "--ten-crop",
        ],
    )
    assert res.exit_code == 0, res.output
    ten = {r["id"]: r for r in document_rows(json.loads(res.output)) if r["rank"] == 1}
    assert len(ten) == 40
    # hierloc evaluate --ten-crop scores exactly those ten-crop answers
    out = tmp_path / "ev10"
    args = ["evaluate", str(tmp_path / "model"), "--data", str(tmp_path / "meta.parquet")]
    res = runner.invoke(app, [*args, "--ten-crop", "-o", str(out)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 40 and metrics["ten_crop"] is True
    scored = pd.read_parquet(out / "predictions.parquet").set_index("id")
    for i, r in ten.items():
        assert scored.loc[i, "latitude"] == pytest.approx(r["latitude"], abs=1e-9)
        assert scored.loc[i, "longitude"] == pytest.approx(r["longitude"], abs=1e-9)
    assert (scored["true_latitude"] == df.set_index("id").loc[scored.index, "latitude"]).all()
    res = runner.invoke(
        app, ["predict", str(tmp_path / "model"), str(tmp_path / "nomap.parquet"), "-f", "json"]
    )
    assert res.exit_code == 2, res.output  # nothing could be answered: one line says so
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 6 and lines[0].startswith("hierloc: rejected p0: no semantic map (unr")
    assert lines[-1].startswith("hierloc: error: none of the 5 images could be read")


def test_oneformer_without_weights_is_a_clear_error(tmp_path, monkeypatch):
    from hierloc.data.semantic import create_provider
    from hierloc.errors import HierlocError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "oneformer"
    empty.mkdir()
    with pytest.raises(HierlocError, match="weights not found.*--provider files"):
        create_provider("oneformer", model=str(empty))
    with pytest.raises(Exception, match="unknown segmentation provider"):
        create_provider("segformer")


def test_torchrun_two_processes_equal_one(toy, tmp_path):
    """Data-parallel GeoSURGE: each process's loss is divided by the global batch's count of
    valid targets / processes, so 2 processes equal 1 with the same global batch (also with
    samples whose cell was dropped)."""
    import subprocess

    from safetensors.torch import load_file

    over = [*TOY, "optim.max_steps=3", "run.checkpoint_every=3", "run.precision=fp32"]
    cmd = torchrun(*_train_args(toy, tmp_path / "ddp", over, val=False))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    args = _train_args(toy, tmp_path / "one", over, val=False)
    assert runner.invoke(app, args).exit_code == 0
    assert (pd.read_parquet(toy / "cells" / "assignments.parquet")[["p2"]] < 0).any().item()
    a = load_file(str(tmp_path / "ddp" / "ckpt-00000003" / "model.safetensors"))
    b = load_file(str(tmp_path / "one" / "ckpt-00000003" / "model.safetensors"))
    for k in b:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (224, 224), (97, 61)])
def test_map_cells_lie_under_the_tokens_that_see_them(size):
    """Image pixels encode their own coordinates; after the encoder's real preprocessing
    (nearest resize, centre crop) the pixel at the centre of token cell (i, j) must be the one
    map cell (i, j) was sampled from — for the plain crop and for each of the ten crops."""
    from PIL import Image

    from hierloc.data.semantic import aligned_map
    from hierloc.encoders.base import Preprocess

    W, H = size
    pre = Preprocess(
        size=224, crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1), interpolation="nearest"
    )
    x, y = np.meshgrid(np.arange(W), np.arange(H))
    img = Image.fromarray(
        np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], -1).astype(np.uint8)
    )
    xs, ys = x.astype(np.int32), y.astype(np.int32)  # the "maps": each cell its coordinates
    grid = 28  # 8 preprocessed pixels per cell
    views = [(pre(img), None, False)]
    tens, boxes = pre.ten_crop(img)
    views += [(t, box, flip) for t, (box, flip) in zip(tens, boxes, strict=True)]
    for tensor, box, flip in views:
        arr = (tensor.numpy().transpose(1, 2, 0) * 255).round().astype(int)  # (224, 224, 3)
        centre = arr[4::8, 4::8]  # the pixel at each cell's centre (crop pixel 8i + 4)
        seen_x = centre[..., 0] + 256 * (centre[..., 2] // 16)
        seen_y = centre[..., 1] + 256 * (centre[..., 2] % 16)
        step = -1 if flip else 1  # a mirrored crop reads its map mirrored
        # nearest sampling on either side: at most one source pixel apart
        assert np.abs(aligned_map(xs, grid, pre, box)[:, ::step] - seen_x).max() <= 1
        assert np.abs(aligned_map(ys, grid, pre, box)[:, ::step] - seen_y).max() <= 1


def test_torchrun_with_validation_and_early_stopping_finishes(toy, tmp_path):
    """Two processes, validation every step and patience 1 with a learning rate too small to
    improve anything: rank 0 decides to stop at the second validation and both processes stop
    there (before the fix rank 1 waited in the next all-reduce for ever)."""
    import json
    import subprocess

    over = [
        *TOY,
        "optim.lr=1e-12",
        "optim.max_steps=20",
        "run.val_every=1",
        "run.patience=1",
        "run.precision=fp32",
    ]
    cmd = torchrun(*_train_args(toy, tmp_path / "ddp", over))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] < 20 and sum("val_geoscore" in r for r in rows) == 2


def test_every_fusion_parameter_gets_a_gradient():
    torch.manual_seed(0)
    attn = LatentCrossAttention(32, 16, heads=4, latent=8)
    assert_every_parameter_learns(attn, torch.randn(3, 5, 32), torch.randn(3, 7, 16))


def test_every_family_answers_the_whole_locator_protocol(trained, toy, tmp_path):
    """What callers use is on the protocol, and each built-in family's locator has all of it
    (HierLoc, a baseline, GeoSURGE); GeoSURGE alone averages ten crops and answers photos one
    by one."""
    from hierloc.locate import Locator, load_locator
    from hierloc.train.families import fit_model

    knn = fit_model("knn", trained / "h", trained / "store", tmp_path / "knn")
    assert _train(toy, tmp_path / "run", 2).exit_code == 0
    res = runner.invoke(app, ["index", str(tmp_path / "run"), "-o", str(tmp_path / "gs")])
    assert res.exit_code == 0, res.output
    locs = [load_locator(trained / "model"), load_locator(knn), load_locator(tmp_path / "gs")]
    for loc in locs:
        assert isinstance(loc, Locator), loc.family
    assert [loc.supports_ten_crop for loc in locs] == [False, False, True]
    assert [loc.batches_photos for loc in locs] == [True, True, False]
    from hierloc.errors import InputError

    with pytest.raises(InputError, match="GeoSURGE answers from photos"):
        locs[2].predict_store(toy / "tok")
