"""GeoSURGE's fusion module: latent attention reduces to standard attention with an identity
latent, shapes for several grids, every parameter gets a gradient, bad maps are refused."""

from __future__ import annotations

import pytest
import torch

from hierloc.models.geosurge import LatentCrossAttention, SemanticFusion, reference_attention


def test_latent_attention_with_identity_latent_is_standard_attention():
    torch.manual_seed(0)
    att = LatentCrossAttention(dim=16, context_dim=12, heads=4, latent=12, out_dim=20).double()
    with torch.no_grad():
        att.down.weight.copy_(torch.eye(12, dtype=torch.float64))  # full-size identity latent
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    ctx = torch.randn(3, 7, 12, dtype=torch.float64)
    got = att(x, ctx)
    want = att.out(reference_attention(att.q(x), att.k(ctx), att.v(ctx), heads=4))
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)
    # a compressing latent is a different function (the test above can fail)
    small = LatentCrossAttention(dim=16, context_dim=12, heads=4, latent=3).double()
    assert small.down.weight.shape == (3, 12)


@pytest.mark.parametrize(
    ("size", "patch"), [((224, 224), 16), ((112, 112), 16), ((224, 112), 16), ((56, 84), 14)]
)
def test_shapes_for_several_grids(size, patch):
    torch.manual_seed(1)
    fusion = SemanticFusion(
        classes=6, rgb_dim=40, out_dim=24, blocks=2, heads=4, latent=8, patch=patch, grid=(14, 14)
    )
    sem = torch.randint(0, 6, (2, *size))
    n = 1 + (size[0] // patch) * (size[1] // patch)
    tokens = fusion.semantic_tokens(sem)
    assert tokens.shape == (2, n, 128)
    out = fusion(torch.randn(2, n, 40), sem)
    assert out.shape == (2, 24)
    with pytest.raises(ValueError, match="backbone's patch grid"):
        fusion(torch.randn(2, n + 1, 40), sem)


@pytest.mark.parametrize("blocks", [0, 1, 2, 3])
def test_every_parameter_gets_a_gradient(blocks):
    """From the first block on, the semantic map reaches the fused CLS (see the module doc)."""
    torch.manual_seed(2)
    fusion = SemanticFusion(
        classes=5,
        rgb_dim=32,
        out_dim=8,
        dim=16,
        blocks=blocks,
        heads=4,
        latent=8,
        patch=8,
        grid=(4, 4),
    )
    out = fusion(torch.randn(3, 17, 32), torch.randint(0, 5, (3, 32, 32)))
    (out**2).sum().backward()
    for name, p in fusion.named_parameters():
        if blocks == 1 and name == "pos":  # one block: only the CLS query's row is read out
            assert p.grad is None or not torch.any(p.grad != 0)
            continue
        assert p.grad is not None and torch.any(p.grad != 0), name


def test_with_one_block_the_output_changes_when_only_the_map_changes():
    """Table VIII's one-block row must see the map: the same RGB tokens with two maps of the
    same classes in other proportions give other features."""
    torch.manual_seed(4)
    fusion = SemanticFusion(
        classes=3, rgb_dim=16, out_dim=8, dim=16, blocks=1, heads=2, latent=4, patch=4, grid=(2, 2)
    )
    rgb = torch.randn(2, 5, 16)
    a = torch.zeros(2, 8, 8, dtype=torch.long)
    b = a.clone()
    b[:, :4] = 2  # the top half another class
    assert not torch.allclose(fusion(rgb, a), fusion(rgb, b), atol=1e-6)


def test_semantic_input_matters_and_bad_maps_are_refused():
    torch.manual_seed(3)
    fusion = SemanticFusion(
        classes=4, rgb_dim=16, out_dim=8, dim=16, blocks=2, heads=2, latent=4, patch=4, grid=(2, 2)
    )
    rgb = torch.randn(1, 5, 16)
    a = fusion(rgb, torch.zeros(1, 8, 8, dtype=torch.long))
    b = fusion(rgb, torch.full((1, 8, 8), 3))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="class ids"):
        fusion(rgb, torch.full((1, 8, 8), 4))
    with pytest.raises(ValueError, match="multiple of the patch"):
        fusion(rgb, torch.zeros(1, 9, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="semantic map"):
        fusion(rgb, None)


def test_semantic_tokens_are_the_per_patch_one_hot_projection():
    """Token (i, j) = Σ over the patch's pixels of the embedding weight of that pixel's class at
    that position + bias + the learned position (i, j); the CLS token first, the learned CLS
    plus the mean over patches of the same projection without positions — written out with
    loops, independent of the convolution that computes it."""
    torch.manual_seed(0)
    p, grid = 7, (2, 3)
    fusion = SemanticFusion(
        classes=5, rgb_dim=8, out_dim=4, dim=6, blocks=1, heads=2, latent=4, patch=p, grid=grid
    )
    sem = torch.randint(0, 5, (2, grid[0] * p, grid[1] * p))
    got = fusion.semantic_tokens(sem)
    W, b = fusion.embed.weight.detach(), fusion.embed.bias.detach()  # (dim, classes, p, p)
    for n in range(2):
        summary = torch.zeros_like(b)
        for i in range(grid[0]):
            for j in range(grid[1]):
                proj = b.clone()
                for y in range(p):
                    for x in range(p):
                        proj = proj + W[:, int(sem[n, i * p + y, j * p + x]), y, x]
                summary = summary + proj / (grid[0] * grid[1])
                tok = got[n, 1 + i * grid[1] + j]
                want = proj + fusion.pos[0, :, i, j].detach()
                assert torch.allclose(tok, want, atol=1e-5), (n, i, j)
        assert torch.allclose(got[n, 0], fusion.cls[0, 0].detach() + summary, atol=1e-5)
