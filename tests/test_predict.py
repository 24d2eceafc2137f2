"""From a trained run to answers: ``hierloc index``, ``Geolocator``, ``hierloc predict`` on
features, feature stores and images, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.data.features import write_feature_store
from hierloc.errors import InputError
from hierloc.hierarchy.pipeline import build_hierarchy
from hierloc.locate.hierloc import Geolocator
from tests.helpers import document_rows
from tests.test_hierarchy import pseudo_photos
from tests.test_train import SMALL

runner = CliRunner()


def _toy_text(texts):
    return np.array([[len(t) % 7, t.count(",")] for t in texts], dtype=np.float32)


def _train_and_index(root, extra=()):
    """A tiny run trained through the CLI (so it records its sources) and its model folder."""
    df = pseudo_photos(300, seed=4)
    rng = np.random.default_rng(0)
    lat, lon = np.deg2rad(df["latitude"]), np.deg2rad(df["longitude"])
    feats = np.column_stack([np.sin(lat), np.cos(lon), rng.normal(size=(300, 14)) * 0.1])
    write_feature_store(root / "store", df["id"].to_numpy(), feats.astype(np.float16))
    df.to_parquet(root / "train.parquet")
    build_hierarchy(
        root / "train.parquet",
        root / "h",
        features=root / "store",
        gazetteer=None,
        text_encoder=_toy_text,
    )
    args = [
        "train",
        "--hierarchy",
        str(root / "h"),
        "--features",
        str(root / "store"),
        "--run-dir",
        str(root / "run"),
        "-o",
        str(root / "model"),
    ]
    for s in SMALL + ["optim.max_steps=6", *extra]:
        args += ["--set", s]
    res = runner.invoke(app, args)  # the run, then its model folder
    assert res.exit_code == 0, res.output
    return root


def test_top_answer_is_the_best_path_of_the_trained_model(trained):
    """The model folder answers like the checkpoint itself: the top path equals brute force
    over every root-to-leaf path with the checkpoint's embeddings."""
    _assert_top_answer_is_brute_force(trained)


def test_feature_skip_model_folder_answers_like_its_checkpoint(tmp_path):
    """``model.feature_skip``'s shared map lives on both sides: the index's query side and
    the entity points it stores must reproduce the checkpoint's brute-force best path."""
    _assert_top_answer_is_brute_force(_train_and_index(tmp_path, ["model.feature_skip=true"]))


def _assert_top_answer_is_brute_force(trained):
    from safetensors.torch import load_file

    from hierloc.config import load_config
    from hierloc.locate import resolve_checkpoint
    from hierloc.models import create_model
    from hierloc.train.data import load_training_data

    ckpt, _ = resolve_checkpoint(trained / "run")
    assert ckpt.name == "ckpt-00000006"  # no validation split: the latest checkpoint
    data = load_training_data(trained / "h", trained / "store")
    cfg = load_config(ckpt / "config.yaml")
    model = create_model("hierloc", cfg.model, data.image_dim, data.entities)
    state = load_file(str(ckpt / "model.safetensors"))
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("loss.")})
    model.eval()
    x = data.train.features[:40]
    with torch.no_grad():
        z, ents = model(x)
        D = [model.manifold.pairwise_dist(z.double(), h.double(), squared=True) for h in ents]
    # every path, from the hierarchy's own parent links
    geo = Geolocator.load(trained / "model")
    ent = geo._loaded.entities
    parent = [
        ent[ent["level"] == lv].sort_values("row")["parent_row"].to_numpy() for lv in range(4)
    ]
    leaves = np.arange(len(parent[3]))
    paths = [leaves]
    for lv in (3, 2, 1):
        paths.insert(0, parent[lv][paths[0]])
    total = sum(-D[lv][:, paths[lv]] for lv in range(4))  # (B, P)
    best = total.argmax(dim=1)
    preds = geo.predict_features(x.numpy(), top_k=1, beam=len(leaves))
    for b, p in enumerate(preds):
        assert p.best.places[-1].entity_id == data.entity_ids[3][int(best[b])]
        assert p.best.score == pytest.approx(float(total[b, best[b]]), rel=1e-9)
    # names and coordinates come from the hierarchy
    city = ent[(ent["level"] == 3) & (ent["entity_id"] == preds[0].best.places[-1].entity_id)]
    assert preds[0].best.latitude == pytest.approx(float(city["latitude"].iloc[0]))
    assert preds[0].best.places[-1].name == city["name"].iloc[0]
    confidences = [a.confidence for a in geo.predict_features(x[:1].numpy(), top_k=5)[0].answers]
    assert all(0 <= c <= 1 for c in confidences) and confidences == sorted(confidences)[::-1]


def test_predict_cli_on_a_feature_store_in_every_format(trained, tmp_path):
    model, store = str(trained / "model"), str(trained / "store")
    res = runner.invoke(app, ["predict", model, store, "--top-k", "2", "-f", "json"])
    assert res.exit_code == 0, res.output
    rows = document_rows(json.loads(res.stdout))
    assert len(rows) == 2 * 300 and {r["rank"] for r in rows} == {1, 2}
    assert {"country", "city", "latitude", "confidence", "city_id"} <= set(rows[0])
    res = runner.invoke(
        app,
        [
            "predict",
            model,
            store,
            "-f",
            "csv",
            "-o",
            str(tmp_path / "p.csv"),
            "--map",
            str(tmp_path / "m.html"),
        ],
    )
    assert res.exit_code == 0, res.output
    csv = pd.read_csv(tmp_path / "p.csv")
    assert len(csv) == 5 * 300
    page = (tmp_path / "m.html").read_text()
    assert page.count("<circle") == 5 * 300 and "data:image/jpeg;base64," in page
    res = runner.invoke(app, ["predict", model, store, "--map", str(tmp_path / "m.png")])
    assert res.exit_code == 0 and "hierloc predict" in res.stdout
    from PIL import Image

    with Image.open(tmp_path / "m.png") as img:
        assert img.size == (1440, 720)


def test_bad_inputs_give_clear_errors(trained, tmp_path):
    geo = Geolocator.load(trained / "model")
    with pytest.raises(InputError, match=r"\(N, 16\)"):
        geo.predict_features(np.zeros((3, 15), np.float32))
    with pytest.raises(InputError, match="NaN"):
        geo.predict_features(np.full((1, 16), np.nan, np.float32))
    res = runner.invoke(app, ["predict", str(tmp_path), str(trained / "store")])
    assert res.exit_code != 0 and "not a model folder" in res.output
    bad = tmp_path / "old"
    import shutil

    shutil.copytree(trained / "model", bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="version 99"):
        Geolocator.load(bad)
    res = runner.invoke(
        app,
        [
            "index",
            str(trained / "run"),
            "-o",
            str(tmp_path / "x"),
            "--hierarchy",
            str(tmp_path / "nothing"),
        ],
    )
    assert res.exit_code != 0 and "Traceback" not in res.output
    # another hierarchy than the run's: refused, naming both
    pd.read_parquet(trained / "train.parquet").iloc[:120].to_parquet(tmp_path / "few.parquet")
    build_hierarchy(
        tmp_path / "few.parquet",
        tmp_path / "h2",
        features=trained / "store",
        gazetteer=None,
        text_encoder=_toy_text,
    )
    res = runner.invoke(
        app,
        [
            "index",
            str(trained / "run"),
            "-o",
            str(tmp_path / "y"),
            "--hierarchy",
            str(tmp_path / "h2"),
        ],
    )
    assert res.exit_code != 0 and "pass the hierarchy it was trained with" in res.output
    assert not (tmp_path / "y").exists()


def encoder_model(root, n: int, photo_seed: int, feature_seed: int, steps: int, name: str):
    """``ROOT/NAME``: a HierLoc model folder naming ``efficientnet-lite0`` (so it takes photos),
    trained ``steps`` steps through the CLI on random features of ``n`` pseudo photos (``ROOT``
    also holds their ``store``, ``t.parquet``, hierarchy ``h`` and ``run``)."""
    from hierloc.encoders import create_image_encoder

    dim = create_image_encoder("efficientnet-lite0").dim
    df = pseudo_photos(n, seed=photo_seed)
    feats = np.random.default_rng(feature_seed).normal(size=(n, dim)).astype(np.float16)
    write_feature_store(root / "store", df["id"].to_numpy(), feats, encoder="efficientnet-lite0")
    df.to_parquet(root / "t.parquet")
    build_hierarchy(
        root / "t.parquet",
        root / "h",
        features=root / "store",
        gazetteer=None,
        text_encoder=_toy_text,
    )
    args = [
        "train",
        "--hierarchy",
        str(root / "h"),
        "--features",
        str(root / "store"),
        "--run-dir",
        str(root / "run"),
        "-o",
        str(root / name),
    ]
    for s in SMALL + [f"optim.max_steps={steps}"]:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return root / name


def test_images_are_encoded_with_the_models_encoder_and_bad_ones_rejected(tmp_path):
    """A model folder naming ``efficientnet-lite0``: image files are embedded with it; a
    corrupt file is reported with its reason, not dropped silently."""
    from PIL import Image

    from hierloc.encoders import create_image_encoder

    enc = create_image_encoder("efficientnet-lite0").eval()
    encoder_model(tmp_path, 60, photo_seed=9, feature_seed=1, steps=1, name="m")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(imgs / f"a{i}.png")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    geo = Geolocator.load(tmp_path / "m")
    preds, rejected = geo.predict_images([imgs], top_k=1)
    assert sorted(p.id for p in preds) == ["a0", "a1"]
    assert [r.id for r in rejected] == ["broken"] and rejected[0].reason
    with Image.open(imgs / "a0.png") as im:
        direct = enc(enc.preprocess(im.convert("RGB"))[None]).detach().numpy()
    want = geo.predict_features(direct, top_k=1)[0].best
    got = next(p for p in preds if p.id == "a0").best
    assert got.places[-1].entity_id == want.places[-1].entity_id
    assert got.score == pytest.approx(want.score, rel=1e-5)
    res = runner.invoke(
        app,
        ["predict", str(tmp_path / "m"), str(imgs), "-o", str(tmp_path / "out.csv"), "-f", "csv"],
    )
    assert res.exit_code == 0 and "rejected broken" in res.output
    assert "broken" in (tmp_path / "out.rejects.csv").read_text()


def _lorentz_probabilities(points, z, K: float, temperature: float) -> np.ndarray:
    """By hand, float64: softmax over entities of ``−d²/temperature``, ``d = R·arcosh(−⟨z, e⟩_L/K)``
    with ``R = √K``, ``⟨x, y⟩_L = −x₀y₀ + Σ xᵢyᵢ`` and ``⟨x, x⟩_L = −K`` (HierLoc's squared
    Lorentz distance, the paper's A.8 convention)."""
    z, e = np.asarray(z, np.float64).copy(), np.asarray(points, np.float64).copy()
    for x in (z, e):  # back onto the hyperboloid ⟨x, x⟩_L = −K from the space part
        x[:, 0] = np.sqrt(K + (x[:, 1:] ** 2).sum(1))
    ip = -np.outer(z[:, 0], e[:, 0]) + z[:, 1:] @ e[:, 1:].T
    d = np.arccosh(np.maximum(1.0, -ip / K)) * np.sqrt(K)
    logits = -(d**2) / temperature
    logits -= logits.max(1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def test_calibrated_confidences_match_the_accuracy_of_a_held_out_half(trained, tmp_path):
    """Temperature scaling per level fitted on one half of a labelled split: each level's
    confidence is its entity's softmax probability over every entity of the level at τ·T
    (checked against the distance by hand), T minimises the validation likelihood on the grid
    (checked by brute force with the hand-made probabilities), and on the other half the mean
    confidence of the top answers is close to their accuracy at every level."""
    import shutil

    import pandas as pd

    from hierloc.hierarchy.labels import metadata_entities
    from hierloc.locate.hierloc import TEMPERATURE_GRID, calibrate

    frame = pd.read_parquet(trained / "train.parquet")
    order = np.random.default_rng(0).permutation(len(frame))
    fit, held = frame.iloc[order[::2]], frame.iloc[order[1::2]]
    fit.to_parquet(tmp_path / "fit.parquet")
    held.to_parquet(tmp_path / "held.parquet")
    model = tmp_path / "m"
    shutil.copytree(trained / "model", model)
    cal = calibrate(model, tmp_path / "fit.parquet", trained / "store")
    geo = Geolocator.load(model)
    assert geo.manifest["calibration"] == cal and cal["images"] == len(fit)
    assert geo.manifest["manifold"] == "lorentz"
    K, tau = float(geo.manifest["K"]), geo.raw_temperature
    for split, is_fit in (("fit", True), ("held", False)):
        truth = metadata_entities(tmp_path / f"{split}.parquet")
        feats = load_feats(trained, truth["id"].to_numpy(dtype=object))
        preds = geo.predict_features(feats, ids=truth["id"].tolist(), top_k=3)
        z = geo.embed(feats).numpy()
        for lv, name in enumerate(["country", "region", "subregion", "city"]):
            ent = geo._loaded.entities
            sub = ent[ent["level"] == lv].sort_values("row")
            row_of = dict(zip(sub["entity_id"], sub["row"], strict=True))
            points = geo.index.points[lv].double().numpy()
            t = cal["levels"][name]["temperature"]
            probs = _lorentz_probabilities(points, z, K, tau * t)
            conf = np.array([p.best.level_confidence[name] for p in preds])
            for b, p in enumerate(preds):  # every answer, not only the best
                for a in p.answers:
                    want = probs[b, row_of[a.places[lv].entity_id]]
                    assert a.level_confidence[name] == pytest.approx(want, rel=1e-6, abs=1e-12)
            ids = np.array([p.best.places[lv].entity_id for p in preds])
            right = ids == truth[f"{name}_id"].to_numpy()
            if is_fit:  # T is the grid's likelihood maximum (brute force, by hand)
                assert cal["levels"][name]["accuracy"] == pytest.approx(right.mean())
                rows = np.array([row_of[i] for i in ids])

                def nll(tt, rows=rows, right=right, points=points, z=z):
                    c = _lorentz_probabilities(points, z, K, tau * tt)[np.arange(len(rows)), rows]
                    c = np.clip(c, 1e-12, 1 - 1e-12)
                    return -(right * np.log(c) + (~right) * np.log1p(-c)).mean()

                best = min(TEMPERATURE_GRID[::6], key=nll)
                assert nll(t) <= nll(best) + 1e-9, (name, t, best)
            else:  # 150 held-out images: the binomial spread of an accuracy is below 0.05
                assert abs(conf.mean() - right.mean()) < 0.12, (name, conf.mean(), right.mean())
    assert preds[0].best.confidence == preds[0].best.level_confidence["city"]


def load_feats(root, ids):
    from hierloc.data.features import FeatureStore

    feats, ok = FeatureStore.open(root / "store").lookup(ids)
    assert ok.all()
    return feats


def test_half_index_refuses_coordinates_beyond_float16(trained, tmp_path):
    """x0 = R·cosh(r/R) passes float16's 65,504 near tangent norm 10.6: --half must refuse
    instead of writing infinities; the float32 index of the same run works."""
    import shutil

    from safetensors.torch import load_file, save_file

    from hierloc.geometry import get_manifold
    from hierloc.locate import resolve_checkpoint

    run = tmp_path / "run"
    shutil.copytree(trained / "run", run)
    ckpt, _ = resolve_checkpoint(run)
    state = load_file(str(ckpt / "model.safetensors"))
    a = state["anchors.3"]
    v = torch.randn(a.shape[0], a.shape[1] - 1, dtype=torch.float64)
    v *= 12.0 / v.norm(dim=1, keepdim=True)
    state["anchors.3"] = get_manifold("lorentz", K=0.8).expmap0(v).float()
    save_file(state, str(ckpt / "model.safetensors"))
    res = runner.invoke(app, ["index", str(run), "-o", str(tmp_path / "m16"), "--half"])
    assert res.exit_code == 2 and "beyond float16's 65,504" in res.stderr, res.output
    assert not (tmp_path / "m16").exists()
    res = runner.invoke(app, ["index", str(run), "-o", str(tmp_path / "m32")])
    assert res.exit_code == 0, res.output
