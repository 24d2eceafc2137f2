"""Every model variant: forward shapes, no NaN, every parameter gets a gradient; attention
equals a naive per-image reference; ablation switches change what they should."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierloc.errors import InputError
from hierloc.hierarchy.io import EntityTables
from hierloc.losses import GWHInfoNCE
from hierloc.models import available_models, create_model
from hierloc.models.hierloc import HierLocConfig, LevelAttention
from tests.helpers import assert_every_parameter_learns

COUNTS = (3, 7, 12, 20)


def tables(image_dim=16, text_dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return EntityTables(
        coords=[
            np.column_stack([rng.uniform(-60, 60, n), rng.uniform(-180, 180, n)]) for n in COUNTS
        ],
        image_mean=[rng.normal(size=(n, image_dim)) for n in COUNTS],
        text=[rng.normal(size=(n, text_dim)) for n in COUNTS],
    )


VARIANTS = {
    "paper": HierLocConfig(dim=16, hidden=32, heads=4),
    "euclidean": HierLocConfig(dim=16, hidden=32, heads=4, manifold="euclidean"),
    "sphere": HierLocConfig(dim=16, hidden=32, heads=4, manifold="sphere", K=1.0),
    "no_attention": HierLocConfig(dim=16, hidden=32, attention=False),
    "image_only": HierLocConfig(dim=16, hidden=32, heads=4, modalities=("image",)),
    "drop_means": HierLocConfig(dim=16, hidden=32, heads=4, drop_image_mean_levels=(2, 3)),
    "curvature": HierLocConfig(dim=16, hidden=32, heads=4, K=2.0),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_forward_shapes_finite_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    cfg = VARIANTS[name]
    model = create_model("hierloc", cfg, 16, tables())
    x = torch.randn(5, 16)
    z, ents = model(x)
    amb = 16 if cfg.manifold == "euclidean" else 17
    assert z.shape == (5, amb) and [e.shape for e in ents] == [(n, amb) for n in COUNTS]
    dists = model.distances(z, ents)
    assert [d.shape for d in dists] == [(5, n) for n in COUNTS]
    assert all(torch.isfinite(d).all() for d in dists)
    targets = [torch.randint(0, n, (5,)) for n in COUNTS]
    km = [torch.rand(5, n) * 5000 for n in COUNTS]
    total, _ = GWHInfoNCE()(dists, targets, km)
    total.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if "attn" in pname or "fuse" in pname or "entity" in pname or "anchors" in pname:
            assert p.grad.abs().sum() > 0, pname


def test_lorentz_anchors_are_manifold_parameters_on_the_hyperboloid():
    import geoopt

    model = create_model("hierloc", VARIANTS["paper"], 16, tables())
    a = model.anchors[0]
    assert isinstance(a, geoopt.ManifoldParameter)
    inner = -(a[:, 0] ** 2) + (a[:, 1:] ** 2).sum(-1)
    assert torch.allclose(inner, torch.full_like(inner, -0.8), atol=1e-5)


def test_level_attention_equals_a_naive_per_image_reference():
    torch.manual_seed(1)
    att = LevelAttention(16, 4)
    q, k = torch.randn(6, 16), torch.randn(30, 16)
    got = att(q, k)
    # reference: each image separately through the same projections, softmax by hand
    Q = att.q(q).view(6, 4, 4)
    K, V = att.k(k).view(30, 4, 4), att.v(k).view(30, 4, 4)
    ref = []
    for b in range(6):
        heads = []
        for h in range(4):
            w = torch.softmax(K[:, h] @ Q[b, h] / 2.0, dim=0)  # sqrt(dh) = 2
            heads.append(w @ V[:, h])
        ref.append(att.out(torch.cat(heads)))
    assert torch.allclose(got, torch.stack(ref), atol=1e-5)
    assert_every_parameter_learns(att, q, k)


def test_switches_change_what_they_should():
    torch.manual_seed(0)
    full = create_model("hierloc", VARIANTS["paper"], 16, tables())
    img = create_model("hierloc", VARIANTS["image_only"], 16, tables())
    assert full.feat_0.shape[1] == 8 * 16 + 16 + 8 and img.feat_0.shape[1] == 16
    drop = create_model("hierloc", VARIANTS["drop_means"], 16, tables())
    assert torch.all(drop.feat_3[:, 128:144] == 0) and torch.any(drop.feat_1[:, 128:144] != 0)
    assert not hasattr(create_model("hierloc", VARIANTS["no_attention"], 16, tables()), "attn")
    with pytest.raises(ValueError, match=r"modalities='audio': one of \['location'"):
        create_model("hierloc", HierLocConfig(modalities=("audio",)), 16, tables())
    with pytest.raises(ValueError, match="Did you mean 'hierloc'"):
        create_model("hierlock")
    assert "hierloc" in available_models()


def test_geometry_stays_float32_under_bf16_autocast():
    """What the trainer does on CUDA, exercised with CPU autocast: the MLPs and attention run in
    bf16, every manifold operation upcasts and disables autocast."""
    torch.manual_seed(0)
    model = create_model("hierloc", VARIANTS["paper"], 16, tables())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        z, ents = model(torch.randn(4, 16))
        assert model.image_out(model.image_mlp(torch.randn(2, 16))).dtype == torch.bfloat16
    assert z.dtype == torch.float32 and all(e.dtype == torch.float32 for e in ents)
    d = model.distances(z, ents)
    assert all(torch.isfinite(x).all() for x in d)


def test_the_image_tangent_is_summed_in_float32_under_bf16_autocast():
    """Under autocast the MLPs' outputs are bf16, but the tangent they add up to (scaled
    delta + skip + attention residual) is summed in float32 before expmap0: the point equals
    expmap0 of the float32 sum of the same bf16 terms (a bf16 sum is off by ~2⁻⁹ relative)."""
    torch.manual_seed(0)
    cfg = HierLocConfig(dim=16, hidden=32, heads=4, feature_skip=True)
    model = create_model("hierloc", cfg, 16, tables())
    with torch.no_grad():  # zero at initialisation: give every term of the sum a value
        for p in [*model.image_out.parameters(), *model.fuse.parameters()]:
            p.normal_(0, 0.05)
    model.eval()  # no dropout: the same terms twice
    x = torch.randn(6, 16)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        ents = model.entity_embeddings()
        ctx = model.entity_context(ents)
        z = model.image_embeddings(x, context=ctx)
        delta = model.image_out(model.image_mlp(x))
        skip = model.skip(x)
        u = model.log_alpha_img.exp().float() * delta.float() + skip.float()
        att = [a.attend(u, kv) for a, kv in zip(model.attn, ctx, strict=True)]
        u = u + model.fuse(torch.cat(att, dim=1)).float()
    assert delta.dtype == torch.bfloat16  # the MLPs did run in bf16
    want = model.manifold.expmap0(u, overflow="clip")
    assert torch.allclose(z, want, rtol=1e-6, atol=1e-6)


SKIP = HierLocConfig(dim=16, hidden=32, heads=4, feature_skip=True, anchor_std=1e-6)


def test_feature_skip_starts_as_nearest_mean_retrieval_at_every_level():
    """``model.feature_skip`` at initialisation: the shared map is an isometry of the means'
    span (8-d features, 20 city means), so the image's tangent inner products are
    ``skip_scale² · cos`` and each level's nearest entity is the entity whose mean image
    embedding has the highest cosine with the image (brute force in numpy)."""
    torch.manual_seed(0)
    ent = tables(image_dim=8)
    model = create_model("hierloc", SKIP, 8, ent).eval()
    x = np.random.default_rng(5).normal(size=(6, 8))
    with torch.no_grad():
        z, ents = model(torch.tensor(x, dtype=torch.float32))
        u = model.manifold.logmap0(z).double().numpy()
        dists = model.distances(z, ents)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(u @ u.T, SKIP.skip_scale**2 * unit @ unit.T, atol=1e-4)
    for lv, mean in enumerate(ent.image_mean):
        m = mean / np.linalg.norm(mean, axis=1, keepdims=True)
        np.testing.assert_array_equal(dists[lv].argmin(1).numpy(), (unit @ m.T).argmax(1))


def test_feature_skip_learns_and_needs_mean_image_embeddings():
    torch.manual_seed(0)
    model = create_model("hierloc", SKIP, 16, tables())
    z, ents = model(torch.randn(5, 16))
    targets = [torch.randint(0, n, (5,)) for n in COUNTS]
    total, _ = GWHInfoNCE()(model.distances(z, ents), targets, [torch.rand(5, n) for n in COUNTS])
    total.backward()
    # the zero-initialised outputs and the shared map learn from the first step
    for name in ("skip_proj.weight", "log_skip_scale", "entity_out.weight", "image_out.weight"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name
    no_means = tables()
    no_means.image_mean = [None] * len(COUNTS)
    cfg = HierLocConfig(dim=16, hidden=32, heads=4, feature_skip=True, modalities=("location",))
    with pytest.raises(InputError, match="feature_skip needs the hierarchy's mean image"):
        create_model("hierloc", cfg, 16, no_means)
