"""Round three's training pieces: the 'wild' re-sharing augmentation and the half content-blind stem."""
import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_ARCH, TINY_SIZE
from modeling import build_detector, constrain_input_filter, load_detector, save_detector
from train.transforms import ShareSiteReencode, build_train_transform


def _noise(size=(200, 160)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def test_share_site_reencode_downscales_and_compresses():
    random.seed(0)
    img = _noise()
    share = ShareSiteReencode(scale=(0.5, 0.5), quality=(60, 60), webp_p=0.0, second_p=0.0)
    out = share(img)
    assert out.size == (100, 80)
    # lossy: a noise image cannot come back exactly from a quality-60 JPEG
    resized = np.asarray(img.resize((100, 80), Image.Resampling.BICUBIC, reducing_gap=None), dtype=np.int16)
    assert np.abs(np.asarray(out, dtype=np.int16) - resized).mean() > 5


def test_share_site_reencode_never_shrinks_below_64_px_and_can_write_webp(monkeypatch):
    saved = []
    original = Image.Image.save
    monkeypatch.setattr(Image.Image, "save", lambda self, fp, fmt=None, **kw: (saved.append(fmt),
                                                                                 original(self, fp, fmt, **kw)))
    share = ShareSiteReencode(scale=(0.1, 0.1), quality=(90, 90), webp_p=1.0, second_p=1.0)
    out = share(_noise((300, 100)))
    assert min(out.size) == 64
    assert saved == ["WEBP", "WEBP"]  # one encode, then the re-share's second one


def test_wild_profile_yields_training_crops_of_the_profile_size():
    transform = build_train_transform({"base": "wild", "crop_size": 48}, 64, (0.5,) * 3, (0.5,) * 3)
    x = transform(_noise())
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32


def test_half_stem_is_blind_in_half_its_channels_only(tmp_path):
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, input_filter="npr_half").eval()
    stem = model.timm_model.stem[0]
    content = torch.randn(1, 3, TINY_SIZE // 2, TINY_SIZE // 2).repeat_interleave(2, -1).repeat_interleave(2, -2)
    with torch.no_grad():
        response = torch.nn.functional.conv2d(content, stem.weight, stride=stem.stride).abs().amax(dim=(0, 2, 3))
    half = stem.out_channels // 2
    assert response[:half].max() < 1e-4  # the blind half ignores content seen at half resolution
    assert response[half:].min() > 1e-3  # the free half reads it
    save_detector(model, tmp_path)
    assert load_detector(tmp_path).config.input_filter == "npr_half"


def test_freeing_half_the_stem_of_an_npr_model_keeps_the_blind_half():
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, input_filter="npr")
    before = model.timm_model.stem[0].weight.detach().clone()
    model.config.input_filter = "npr_half"
    with torch.no_grad():
        model.timm_model.stem[0].weight.add_(torch.randn_like(before))  # as an optimizer step would
    constrain_input_filter(model)
    after = model.timm_model.stem[0].weight
    half = after.shape[0] // 2
    o, c, kh, kw = after.shape
    blocks = after[:half].view(half, c, kh // 2, 2, kw // 2, 2)
    assert blocks.sum(dim=(3, 5)).abs().max() < 1e-5
    assert not torch.allclose(after[half:], before[half:])


def test_unknown_input_filter_is_refused():
    with pytest.raises(ValueError, match="unknown input_filter"):
        build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, input_filter="npr_third")
