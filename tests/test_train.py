"""Training: configs, a tiny end-to-end run through the CLI, exact resume, anchors stay on
the hyperboloid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.config import load_config
from hierloc.data.features import write_feature_store
from hierloc.errors import InputError
from hierloc.hierarchy.pipeline import build_hierarchy
from hierloc.train.data import load_training_data
from hierloc.train.hierloc import HierLocTrainer
from hierloc.train.runtime import start_trainer
from tests.helpers import set_options, torchrun
from tests.test_hierarchy import pseudo_photos

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    df = pseudo_photos(400, seed=21)
    rng = np.random.default_rng(0)
    # features that carry the location (so the model has something to learn)
    lat, lon = np.deg2rad(df["latitude"]), np.deg2rad(df["longitude"])
    noise = rng.normal(size=(400, 14)) * 0.1
    feats = np.column_stack([np.sin(lat), np.cos(lon), noise]).astype(np.float16)
    write_feature_store(root / "store", df["id"].to_numpy(), feats)
    df.iloc[:320].to_parquet(root / "train.parquet")
    df.iloc[320:].to_parquet(root / "val.parquet")

    def toy_text(texts):
        return np.array([[len(t) % 7, t.count(",")] for t in texts], dtype=np.float32)

    build_hierarchy(
        root / "train.parquet",
        root / "h",
        features=root / "store",
        gazetteer=None,
        text_encoder=toy_text,
    )
    return root


SMALL = [
    "model.dim=16",
    "model.hidden=32",
    "model.heads=4",
    "optim.batch_size=32",
    "run.val_every=5",
    "run.checkpoint_every=4",
]


def start(cfg, data, run_dir) -> HierLocTrainer:
    """A HierLoc trainer as ``hierloc train`` makes one (seeded, allocator tuned)."""
    return start_trainer(HierLocTrainer, cfg, data, run_dir)


def test_config_errors():
    with pytest.raises(InputError, match="did you mean 'batch_size'"):
        load_config(overrides=["optim.batchsize=3"])
    with pytest.raises(InputError, match="'fast' is not a number"):
        load_config(overrides=["optim.lr=fast"])
    assert load_config(overrides=["optim.lr=1e-3"]).optim.lr == 1e-3


def _params(tr):
    return torch.cat([p.detach().flatten() for p in tr.model.parameters()])


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["optim.sampled_entities=6", "optim.schedule=cosine", "optim.warmup_steps=3"],
        ["model.loo_means=true", "model.feature_skip=true"],
    ],
)
def test_resume_equals_straight_run(setup, tmp_path, extra):
    data = load_training_data(setup / "h", setup / "store", setup / "val.parquet")
    cfg = load_config(overrides=SMALL + extra + ["optim.max_steps=8"])
    straight = start(cfg, data, tmp_path / "a")
    list(straight.steps())
    half = start(cfg, data, tmp_path / "b")
    for info in half.steps():  # stop after the checkpoint of step 4 (checkpoint_every=4)
        if info["step"] == 4:
            break
    resumed = start(cfg, data, tmp_path / "b")
    resumed.load_checkpoint(resumed.latest_checkpoint())
    assert resumed.step == 4
    list(resumed.steps())
    assert resumed.step == 8
    assert torch.allclose(_params(straight), _params(resumed), atol=1e-6)


@pytest.mark.parametrize("attention", [True, False])
def test_trainer_gradients_equal_autograd_of_the_reference_loss(setup, attention):
    """The trainer's backward (fused, memory-bounded loss with hand gradients) gives the
    gradients of plain autograd through ``pairwise_dist`` + ``gwh_infonce``."""
    from hierloc.geo.haversine import pairwise_km, unit_vectors

    data = load_training_data(setup / "h", setup / "store")
    over = SMALL + [
        "model.dropout=0.0",
        "run.precision=fp32",
        f"model.attention={str(attention).lower()}",
    ]
    tr = start(load_config(overrides=over), data, setup / "unused")
    idx = torch.arange(23)
    x, t, c = data.train.features[idx], data.train.targets[idx], data.train.coords[idx]
    loss, _ = tr.backward(x, t, c)
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters()}
    got_tau = tr.loss_fn.log_tau.grad.clone()
    tr.model.zero_grad(set_to_none=True)
    tr.loss_fn.zero_grad(set_to_none=True)
    # reference: everything in one graph, km by the haversine-equivalent matmul in float64
    z, ents = tr.model(x)
    xyz = unit_vectors(c[:, 0], c[:, 1])
    km = [
        pairwise_km(xyz, unit_vectors(*torch.tensor(np.array(e), dtype=torch.float64).T))
        for e in data.entities.coords
    ]
    ref, _ = tr.loss_fn(tr.model.distances(z, ents), list(t.T), [k.float() for k in km])
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
    for n, p in tr.model.named_parameters():
        assert torch.allclose(got[n], p.grad, rtol=1e-3, atol=1e-6), n
    assert torch.allclose(got_tau, tr.loss_fn.log_tau.grad, rtol=1e-3)


def test_sampled_entities_equal_the_reference_loss_on_the_sample(setup):
    """``optim.sampled_entities``: the sample holds every positive of the batch, and the
    trainer's loss and gradients equal autograd of the reference loss on the sampled entities
    with the sampled-softmax offset on the negatives; unsampled anchors get no gradient."""
    import math

    from hierloc.geo.haversine import pairwise_km, unit_vectors
    from hierloc.losses import gwh_infonce

    data = load_training_data(setup / "h", setup / "store")
    n = 6
    over = SMALL + ["model.dropout=0.0", "run.precision=fp32", f"optim.sampled_entities={n}"]
    tr = start(load_config(overrides=over), data, setup / "unused")
    counts = tr.model.entity_counts
    assert max(counts) > 3 * n  # the toy hierarchy is large enough to sample
    idx = torch.arange(23)
    x, t, c = data.train.features[idx], data.train.targets[idx], data.train.coords[idx]
    subsets, offsets = tr._entity_sample(t)
    local = []
    for lv, (s, E) in enumerate(zip(subsets, counts, strict=True)):
        if E <= n:
            assert s is None and offsets[lv] == 0.0
            local.append(t[:, lv])
            continue
        assert torch.all(s[1:] > s[:-1]) and set(t[:, lv].tolist()) <= set(s.tolist())
        assert n <= len(s) <= n + len(idx)
        assert offsets[lv] == pytest.approx(math.log((E - 1) / (len(s) - 1)))
        pos = torch.searchsorted(s, t[:, lv].contiguous())
        assert torch.equal(s[pos], t[:, lv])
        local.append(pos)
    local = torch.stack(local, 1)
    loss, _ = tr.backward(x, local, c, subsets, offsets)
    got = {k: p.grad.clone() for k, p in tr.model.named_parameters()}
    tr.model.zero_grad(set_to_none=True)
    tr.loss_fn.zero_grad(set_to_none=True)
    z, ents = tr.model(x, subsets)
    xyz = unit_vectors(c[:, 0], c[:, 1])
    tau = tr.loss_fn.tau
    ref = 0.0
    for lv, (h, s, off) in enumerate(zip(ents, subsets, offsets, strict=True)):
        coords = torch.tensor(np.array(data.entities.coords[lv]), dtype=torch.float64)
        if s is not None:
            coords = coords[s]
        km = pairwise_km(xyz, unit_vectors(*coords.T)).float()
        D = tr.model.distances(z, [h])[0] ** 2
        neg = 1.0 - torch.nn.functional.one_hot(local[:, lv], h.shape[0]).float()
        ref = ref + gwh_infonce(D - tau * off * neg, local[:, lv], km, tau).mean()
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
    for k, p in tr.model.named_parameters():
        assert torch.allclose(got[k], p.grad, rtol=1e-3, atol=1e-6), k
    city = counts.index(max(counts))
    unsampled = torch.ones(counts[city], dtype=torch.bool)
    unsampled[subsets[city]] = False
    assert torch.all(got[f"anchors.{city}"][unsampled] == 0)
    assert torch.any(got[f"anchors.{city}"][~unsampled] != 0)


def _loo_brute_force(feats: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``(L, N, D)``: per level, the mean feature of the other training images of each image's
    entity, or the level above's when there are none (zeros above the country), by loops."""
    N, L = targets.shape
    out = np.zeros((L, N, feats.shape[1]))
    for i in range(N):
        above = np.zeros(feats.shape[1])
        for lv in range(L):
            others = [j for j in range(N) if j != i and targets[j, lv] == targets[i, lv]]
            if others:
                above = feats[others].astype(np.float64).mean(0)
            out[lv, i] = above
    return out


def test_leave_one_out_means_equal_brute_force(setup):
    from hierloc.train.hierloc import LeaveOneOutMeans

    data = load_training_data(setup / "h", setup / "store")
    x, t = data.train.features, data.train.targets
    counts = [len(c) for c in data.entities.coords]
    ref = _loo_brute_force(x.numpy(), t.numpy())
    got = LeaveOneOutMeans(x, t, counts)(x, t)
    for lv in range(len(counts)):
        np.testing.assert_allclose(got[lv].numpy(), ref[lv], rtol=1e-5, atol=1e-6)
    # both cases occur: images alone in their region (a country's mean or zeros) and not
    alone = torch.bincount(t[:, 1])[t[:, 1]] == 1
    assert 0 < int(alone.sum()) < len(t)


@pytest.mark.parametrize("sampled", [0, 6])
def test_loo_means_loss_and_gradients_equal_a_per_image_reference(setup, sampled):
    """``model.loo_means``: the trainer's loss and gradients equal autograd of GWH-InfoNCE
    written out per image, where image i's positive is its entity embedded by the model's
    ordinary path after that entity's mean image embedding (in the MLP input and the shared
    map) was overwritten with image i's brute-force leave-one-out mean; with
    ``optim.sampled_entities`` the negatives are the sample's other entities, each with the
    sampled-softmax offset."""
    from hierloc.geo.haversine import pairwise_km, unit_vectors

    data = load_training_data(setup / "h", setup / "store")
    over = SMALL + [
        "model.dropout=0.0",
        "run.precision=fp32",
        "model.feature_skip=true",
        f"optim.sampled_entities={sampled}",
        "model.loo_means=true",
    ]
    cfg = load_config(overrides=over)
    tr = start(cfg, data, setup / "unused")
    idx = torch.arange(0, 230, 10)
    x, t, c = data.train.features[idx], data.train.targets[idx], data.train.coords[idx]
    L = len(data.entities.coords)
    subsets, offsets = tr._entity_sample(t) if sampled else ([None] * L, [0.0] * L)
    local = torch.stack(  # the positives' positions within the sampled entities
        [
            t[:, lv] if s is None else torch.searchsorted(s, t[:, lv].contiguous())
            for lv, s in enumerate(subsets)
        ],
        1,
    )
    assert sampled == 0 or any(s is not None for s in subsets)
    loss, _ = tr.backward(x, local, c, subsets if sampled else None, offsets)
    got = {n: p.grad.clone() for n, p in tr.model.named_parameters()}
    tr.model.zero_grad(set_to_none=True)
    tr.loss_fn.zero_grad(set_to_none=True)

    loo = _loo_brute_force(data.train.features.numpy(), data.train.targets.numpy())[:, idx]
    model = tr.model
    start_col = 8 * cfg.model.location_scales  # entity features: [location, image mean, text]
    cols = slice(start_col, start_col + data.image_dim)
    z, ents = model(x, subsets if sampled else None)  # attention over the sample, as trained
    positives = []  # per image, per level: the positive's point with the leave-one-out mean
    for i in range(len(idx)):
        saved = []
        for lv in range(L):  # new buffers (autograd keeps the old ones for the backward)
            feat, skip = getattr(model, f"feat_{lv}"), getattr(model, f"skipfeat_{lv}")
            saved.append((feat, skip))
            e, m = int(t[i, lv]), torch.tensor(loo[lv, i], dtype=torch.float32)
            feat, skip = feat.clone(), skip.clone()
            feat[e, cols], skip[e] = m, m
            setattr(model, f"feat_{lv}", feat)
            setattr(model, f"skipfeat_{lv}", skip)
        h = model.entity_embeddings()
        positives.append([h[lv][int(t[i, lv])] for lv in range(L)])
        for lv, (feat, skip) in enumerate(saved):
            setattr(model, f"feat_{lv}", feat)
            setattr(model, f"skipfeat_{lv}", skip)
    tau, lam, sigma = tr.loss_fn.tau, cfg.loss.lam, cfg.loss.sigma_km
    xyz = unit_vectors(c[:, 0], c[:, 1])
    ref = 0.0
    for lv in range(L):
        coords = torch.tensor(np.array(data.entities.coords[lv]), dtype=torch.float64)
        if subsets[lv] is not None:
            coords = coords[subsets[lv]]
        km = pairwise_km(xyz, unit_vectors(*coords.T))
        D = model.distances(z, [ents[lv]])[0] ** 2  # columns: the (sampled) entities
        terms = []
        for i in range(len(idx)):
            d_pos = model.manifold.dist(z[i], positives[i][lv]) ** 2
            neg = torch.ones(D.shape[1], dtype=torch.bool)
            neg[int(local[i, lv])] = False
            logw = torch.log1p(lam * torch.exp(-km[i, neg] / sigma)).float() + offsets[lv]
            logits = torch.cat([(-d_pos / tau)[None], -D[i, neg] / tau + logw])
            terms.append(torch.logsumexp(logits, 0) + d_pos / tau)
        ref = ref + torch.stack(terms).mean()
    ref.backward()
    assert loss == pytest.approx(float(ref.detach()), rel=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(got[n], p.grad, rtol=1e-3, atol=1e-6), n
    # the leave-one-out positives change the loss: without them it differs
    plain = start(load_config(overrides=over[:-1]), data, setup / "unused")
    plain.model.load_state_dict(model.state_dict())
    assert abs(plain.backward(x, local, c, subsets if sampled else None, offsets)[0] - loss) > 1e-3


def test_validation_reports_majority_seen_and_median_km_as_brute_force(setup):
    from hierloc.geo.haversine import haversine_km

    data = load_training_data(setup / "h", setup / "store", setup / "val.parquet")
    tr = start(load_config(overrides=SMALL + ["model.dropout=0.0"]), data, setup / "unused")
    got = tr.validate(batch=7)  # several batches, a ragged last one
    v, train_t = data.val, data.train.targets.numpy()
    t = v.targets.numpy()
    with torch.no_grad():
        z, ents = tr.model(v.features)
        pred = [d.argmin(dim=1).numpy() for d in tr.model.distances(z, ents)]
    for k, name in enumerate(["country", "region", "subregion", "city"]):
        counts = np.bincount(train_t[:, k])
        assert got[f"val_majority_{name}"] == pytest.approx(np.mean(t[:, k] == counts.argmax()))
        known = t[:, k] >= 0
        assert got[f"val_seen_{name}"] == pytest.approx(known.mean())
        assert got[f"val_acc_{name}"] == pytest.approx(np.mean(pred[k] == t[:, k]))
        seen_hits = np.sum(pred[k][known] == t[known, k])
        assert got[f"val_acc_seen_{name}"] == pytest.approx(seen_hits / max(1, known.sum()))
    city = np.array(data.entities.coords[-1])[pred[-1]]
    km = haversine_km(v.coords[:, 0].numpy(), v.coords[:, 1].numpy(), city[:, 0], city[:, 1])
    assert got["val_median_km"] == pytest.approx(np.median(km), rel=1e-6)
    assert 0 < got["val_seen_region"] < 1  # the toy val split has unseen entities


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_learning_rate_schedules_follow_their_formulas(setup, schedule):
    import math

    data = load_training_data(setup / "h", setup / "store")
    over = SMALL + [
        f"optim.schedule={schedule}",
        "optim.warmup_steps=2",
        "optim.max_steps=7",
        "optim.lr=1e-3",
        "optim.riemannian_lr=2e-3",
    ]
    tr = start(load_config(overrides=over), data, setup / "unused")
    spe = tr.steps_per_epoch  # 320 images / 32 = 10 steps per epoch
    assert spe == 10
    for step in range(7):
        tr.train_step()
        warm = min(1.0, (step + 1) / 2)
        want = {
            "constant": warm,
            "cosine": warm * 0.5 * (1 + math.cos(math.pi * step / 7)),
            "step": warm * 0.5 ** (step // spe),
        }[schedule]
        assert tr.opt.param_groups[0]["lr"] == pytest.approx(1e-3 * want)
        assert tr.ropt.param_groups[0]["lr"] == pytest.approx(2e-3 * want)
    with pytest.raises(ValueError, match="optim.schedule"):
        start(
            load_config(overrides=SMALL + ["optim.schedule=linear"]),
            data,
            setup / "u2",
        )


def test_cli_train_end_to_end(setup, tmp_path):
    base = ["train", "--hierarchy", str(setup / "h"), "--features", str(setup / "store")]
    base += ["--val", str(setup / "val.parquet"), *set_options(SMALL + ["optim.max_steps=10"])]
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["steps"] == 10 and 0 <= out["val_acc_country"] <= 1
    # the model folder, and the run beside it (--run's default: the output's path + .run)
    assert out["folder"] == str(tmp_path / "model") and out["run"] == str(tmp_path / "model.run")
    assert out["model"] == "hierloc"  # the family, as a baseline's summary says it
    built = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert Path(built["checkpoint"]) == tmp_path / "model.run" / "best"
    run = tmp_path / "model.run"
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 10 and "val_acc_city" in json.loads(lines[4])
    assert (run / "best" / "model.safetensors").exists()
    assert len(list(run.glob("ckpt-*"))) == 2  # keep_last
    # rerunning resumes from the last checkpoint, has nothing left to do, and rebuilds its own
    # model folder; another model folder there is refused without --overwrite
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "model")])
    assert res.exit_code == 0 and "resuming from" in res.stderr, res.output
    res = runner.invoke(
        app, [*base, "--run-dir", str(tmp_path / "other"), "-o", str(tmp_path / "model")]
    )
    assert res.exit_code == 2 and "--overwrite" in res.output and not (tmp_path / "other").exists()
    # a run given as the output is named as one, with the fix
    res = runner.invoke(app, [*base, "-o", str(run)])
    assert res.exit_code == 2 and f"--run-dir {run} -o MODEL" in res.output, res.output


def test_without_keep_best_the_model_is_the_last_step(setup, tmp_path):
    """``run.keep_best=false``: validation is logged, no ``best`` checkpoint is written even when
    a validation improves, and ``hierloc index`` takes the last step."""
    run = tmp_path / "run"
    args = ["train", "--hierarchy", str(setup / "h"), "--features", str(setup / "store")]
    args += ["--val", str(setup / "val.parquet"), "--run-dir", str(run), "-o", str(tmp_path / "m0")]
    for s in SMALL + ["optim.max_steps=10", "run.keep_best=false"]:
        args += ["--set", s]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("is_best") for r in rows) and "val_geoscore" in rows[-1]
    assert not (run / "best").exists()
    res = runner.invoke(app, ["index", str(run), "-o", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert Path(manifest["checkpoint"]).name == "ckpt-00000010"


def test_anchors_stay_on_the_hyperboloid(setup, tmp_path):
    data = load_training_data(setup / "h", setup / "store")
    cfg = load_config(overrides=SMALL + ["optim.max_steps=30", "optim.riemannian_lr=0.05"])
    tr = start(cfg, data, tmp_path / "r")
    list(tr.steps())
    for a in tr.model.anchors:
        a = a.detach().double()
        inner = -(a[:, 0] ** 2) + (a[:, 1:] ** 2).sum(-1)
        assert torch.allclose(inner, torch.full_like(inner, -0.8), atol=1e-4)


def test_sigkill_and_resume_equals_straight_run(setup, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    overrides = SMALL + ["optim.max_steps=16", "run.checkpoint_every=2", "run.keep_last=3"]
    cmd = [
        sys.executable,
        "-m",
        "hierloc",
        "train",
        "--hierarchy",
        str(setup / "h"),
        "--features",
        str(setup / "store"),
        "--run-dir",
        str(tmp_path / "run"),
        "-o",
        str(tmp_path / "model"),
        *set_options(overrides),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "run" / "ckpt-00000006").exists():
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted((tmp_path / "run").glob("ckpt-*"))
    assert done and done[-1].name < "ckpt-00000016", [d.name for d in done]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    data = load_training_data(setup / "h", setup / "store")
    straight = start(load_config(overrides=overrides), data, tmp_path / "straight")
    list(straight.steps())
    got = load_file(str(tmp_path / "run" / "ckpt-00000016" / "model.safetensors"))
    for name, p in straight.model.state_dict().items():
        assert torch.allclose(got[name], p.detach(), atol=1e-6), name


def test_torchrun_two_processes_equal_one_with_the_same_global_batch(setup, tmp_path):
    """Two processes with validation every 3 steps: the same weights and the same validation
    metrics as one process with the same global batch (validation runs on rank 0; the others
    wait and agree on stopping)."""
    import json
    import subprocess

    from safetensors.torch import load_file

    overrides = SMALL + [
        "optim.max_steps=6",
        "model.dropout=0.0",
        "run.checkpoint_every=6",
        "run.precision=fp32",
        "run.val_every=3",
    ]
    cmd = torchrun(
        "train",
        "--hierarchy",
        str(setup / "h"),
        "--features",
        str(setup / "store"),
        "--val",
        str(setup / "val.parquet"),
        "--run-dir",
        str(tmp_path / "ddp"),
        "-o",
        str(tmp_path / "ddp-model"),
        sets=overrides,
    )
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    data = load_training_data(setup / "h", setup / "store", setup / "val.parquet")
    single = start(load_config(overrides=overrides), data, tmp_path / "single")
    list(single.steps())

    def val_rows(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [
            {k: v for k, v in r.items() if k.startswith("val_")}
            for r in rows
            if "val_geoscore" in r
        ]

    want, got_val = val_rows(tmp_path / "single"), val_rows(tmp_path / "ddp")
    assert len(want) == len(got_val) == 2
    for w, g in zip(want, got_val, strict=True):
        assert set(w) == set(g)
        for k in w:
            assert g[k] == pytest.approx(w[k], rel=1e-4, abs=1e-6), k
    got = load_file(str(tmp_path / "ddp" / "ckpt-00000006" / "model.safetensors"))
    for name, p in single.model.state_dict().items():
        assert torch.allclose(got[name], p.detach(), atol=1e-5), name
    assert torch.allclose(got["loss.log_tau"], single.loss_fn.log_tau.detach(), atol=1e-6)


def test_validation_loss_and_geoscore_as_brute_force(setup):
    """val_loss: the mean GWH-InfoNCE over the (image, level) pairs whose entity exists in
    training (unknown targets have no loss and leave the denominator); val_geoscore: the mean
    GeoScore of the best path over every root-to-leaf path (a validation beam wider than any
    level makes beam search exhaustive)."""
    from hierloc.geo.haversine import haversine_km, unit_vectors

    data = load_training_data(setup / "h", setup / "store", setup / "val.parquet")
    over = SMALL + ["model.dropout=0.0", "run.val_beam=1000"]
    tr = start(load_config(overrides=over), data, setup / "unused")
    got = tr.validate(batch=7)
    v = data.val
    with torch.no_grad():
        z, ents = tr.model(v.features)
        dists = tr.model.distances(z, ents)
    km = tr._geo_km(unit_vectors(v.coords[:, 0], v.coords[:, 1]), tr.entity_xyz)
    total, pairs = 0.0, 0
    for k, d in enumerate(dists):
        known = v.targets[:, k] >= 0
        with torch.no_grad():
            loss = tr.loss_fn.level_loss(d[known], v.targets[known, k], km[k][known])
        total += float(loss.sum())
        pairs += int(known.sum())
    assert pairs < len(v) * len(dists)  # some targets are unknown: the denominators differ
    assert got["val_loss"] == pytest.approx(total / pairs, rel=1e-5)
    # every path, from the ids (an entity's parent is its id without the last part)
    ids = data.entity_ids
    paths = []
    for leaf in range(len(ids[-1])):
        path = [leaf]
        for lv in range(len(ids) - 1, 0, -1):
            parent = ids[lv][path[-1]].rsplit("/", 1)[0]
            path.append(list(ids[lv - 1]).index(parent))
        paths.append(path[::-1])
    paths = np.array(paths)
    d2 = [(d.double() ** 2).numpy() for d in dists]
    score = sum(d2[lv][:, paths[:, lv]] for lv in range(len(ids)))  # (B, P)
    leaf = paths[score.argmin(1), -1]
    city = np.array(data.entities.coords[-1])[leaf]
    err = haversine_km(v.coords[:, 0].numpy(), v.coords[:, 1].numpy(), city[:, 0], city[:, 1])
    assert got["val_geoscore"] == pytest.approx(np.mean(5000 * np.exp(-err / 1492.7)), rel=1e-9)


def test_weight_decay_leaves_the_log_scalars_alone(setup, tmp_path):
    """AdamW's decay pulls every decayed parameter towards 0 whatever its gradient; log τ and
    log α must move the same with and without it, the weights must not."""
    data = load_training_data(setup / "h", setup / "store")
    after = []
    for wd in (0.0, 0.5):
        torch.manual_seed(0)
        over = SMALL + [
            "model.dropout=0.0",
            "run.precision=fp32",
            f"optim.weight_decay={wd}",
            "optim.lr=0.01",
        ]
        tr = start(load_config(overrides=over), data, tmp_path / f"wd{wd}")
        tr.train_step()
        named = dict(tr.model.named_parameters()) | {
            f"loss.{n}": p for n, p in tr.loss_fn.named_parameters()
        }
        after.append({n: p.detach().clone() for n, p in named.items()})
    logs = [n for n in after[0] if n.rsplit(".", 1)[-1].startswith("log_")]
    assert {"loss.log_tau", "log_alpha_img", "log_alpha_node"} <= set(logs)
    for n in logs:
        assert torch.equal(after[0][n], after[1][n]), n
    assert not torch.equal(after[0]["image_mlp.0.weight"], after[1]["image_mlp.0.weight"])


def test_gradient_clipping_covers_the_anchors(setup, tmp_path, monkeypatch):
    data = load_training_data(setup / "h", setup / "store")
    tr = start(load_config(overrides=SMALL), data, tmp_path / "clip")
    seen = []
    real = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        params = list(params)
        seen.append({id(p) for p in params})
        return real(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    tr.train_step()
    every = {id(p) for p in tr.model.parameters()} | {id(p) for p in tr.loss_fn.parameters()}
    anchors = {id(p) for n, p in tr.model.named_parameters() if n.startswith("anchors")}
    assert anchors and seen == [every]


def test_a_checkpoint_that_does_not_fit_is_refused(setup, tmp_path):
    from safetensors.torch import load_file, save_file

    data = load_training_data(setup / "h", setup / "store")
    tr = start(load_config(overrides=SMALL), data, tmp_path / "run")
    ckpt = tr.save_checkpoint()
    state = load_file(str(ckpt / "model.safetensors"))
    state.pop("image_mlp.0.weight")
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(InputError, match=r"ckpt-00000000: does not fit this run's model"):
        start(load_config(overrides=SMALL), data, tmp_path / "run").load_checkpoint(ckpt)


def test_torchrun_with_validation_and_early_stopping_finishes(setup, tmp_path):
    """Every process takes rank 0's early-stopping decision: a two-process run that stops
    early must end (before the fix, rank 1 waited in the next all-reduce for ever)."""
    import subprocess

    overrides = SMALL + [
        "optim.max_steps=40",
        "run.val_every=1",
        "run.patience=1",
        "optim.lr=1e-12",
        "optim.riemannian_lr=1e-12",
    ]
    cmd = torchrun(
        "train",
        "--hierarchy",
        str(setup / "h"),
        "--features",
        str(setup / "store"),
        "--val",
        str(setup / "val.parquet"),
        "--run-dir",
        str(tmp_path / "ddp"),
        "-o",
        str(tmp_path / "ddp-model"),
        sets=overrides,
    )
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1].get("early_stop") and rows[-1]["step"] < 40


def test_the_validation_line_names_every_level_for_hierloc_and_every_partition_for_geosurge():
    from hierloc.cli.train import _val_line

    hierloc = {
        "val_acc_country": 0.05,
        "val_majority_country": 0.15,
        "val_acc_seen_country": 0.07,
        "val_acc_city": 0.0,
        "val_majority_city": 0.0,
        "val_median_km": 7900.8,
        "val_geoscore": 479.8,
    }
    line = _val_line(hierloc)
    assert line == "val country 5.0% (15.0%) city 0.0% (0.0%), GeoScore 480, median 7,901 km"
    geosurge = {
        "val_acc_p0": 0.252,
        "val_acc_p1": 0.216,
        "val_geoscore": 1329,
        "val_median_km": 5300,
    }
    assert _val_line(geosurge) == "val p0 25.2% p1 21.6%, GeoScore 1,329, median 5,300 km"
