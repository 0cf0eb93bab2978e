"""Augmentation profiles for training. (The evaluation transform is the model's own: modeling.detector.eval_transform.)

A detector learns from traces a generator leaves in the pixels, so the augmentations here are the ones that
occur in the wild after an image leaves the generator (re-encoding, resampling, mild blur, colour tweaks) and
are applied the same way to both classes: the model must not learn "was re-encoded" as a class cue.

Every profile is a plain dataclass, so a config can name one ("train", "light", "continual", "native") and
training_config.json records its exact numbers. Sizes scale from image_size; the probabilities and ranges are
the seed recipe's.
"""
from __future__ import annotations

import dataclasses
import io
import json
import random
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2


@dataclass(frozen=True)
class AugmentationProfile:
    crop: str = "resized"                 # "resized": RandomResizedCrop; "native": random crop of native pixels
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (0.85, 1.15)
    hflip: bool = True
    jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.0
    resample: tuple[float, float] = (1.0, 1.0)   # down-then-up resampling factor range
    resample_p: float = 0.0
    jpeg_quality: tuple[int, int] = (95, 95)
    jpeg_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 0.5)  # Gaussian blur, kernel 3
    blur_p: float = 0.0
    grayscale_p: float = 0.0
    crop_size: int | None = None          # training crop; None = the model's image_size
    # Re-sharing as social and hosting sites do, on the whole image before the crop (both classes alike):
    # a downscale, one JPEG or WebP encode with random chroma subsampling, sometimes a second encode.
    share_p: float = 0.0
    share_scale: tuple[float, float] = (0.4, 1.0)
    share_quality: tuple[int, int] = (60, 95)
    share_webp_p: float = 0.25
    share_second_p: float = 0.3


PROFILES: dict[str, AugmentationProfile] = {
    # seed phase 1: the main profile
    "train": AugmentationProfile(
        scale=(0.6, 1.0), ratio=(0.85, 1.15), jitter=(0.06, 0.06, 0.06, 0.02), jitter_p=0.3,
        resample=(0.80, 0.95), resample_p=0.3, jpeg_quality=(80, 95), jpeg_p=0.3, blur_p=0.2, grayscale_p=0.03),
    # seed's paired COCO/SD2 set: the pair differs only in generator traces, so keep the pixels nearly untouched
    "light": AugmentationProfile(scale=(0.75, 1.0), ratio=(0.9, 1.1)),
    # seed phase 2: gentler, to adapt to new generators without washing out what phase 1 learned
    "continual": AugmentationProfile(
        scale=(0.85, 1.0), ratio=(0.85, 1.15), jitter=(0.03, 0.03, 0.03, 0.01), jitter_p=0.2,
        resample=(0.90, 0.97), resample_p=0.1, jpeg_quality=(88, 98), jpeg_p=0.1, blur_p=0.1, grayscale_p=0.03),
    # images as they circulate online: most are re-shared (resized, re-encoded once or twice) before the crop
    "wild": AugmentationProfile(
        scale=(0.25, 1.0), ratio=(0.9, 1.1), jitter=(0.06, 0.06, 0.06, 0.02), jitter_p=0.3, blur_p=0.1,
        grayscale_p=0.03, share_p=0.75),
    # native-pixel crops (no rescaling, so generation artefacts keep their scale) with the train degradations
    "native": AugmentationProfile(
        crop="native", jitter=(0.06, 0.06, 0.06, 0.02), jitter_p=0.3, resample=(0.80, 0.95), resample_p=0.3,
        jpeg_quality=(80, 95), jpeg_p=0.3, blur_p=0.2, grayscale_p=0.03),
}


def get_profile(profile: str | dict | AugmentationProfile) -> AugmentationProfile:
    """A profile by name, as given, or from a dict (`{"base": "train", "jpeg_p": 0.5}` overrides a named one),
    also as JSON text, so that a command-line flag can give one."""
    if isinstance(profile, str) and profile.lstrip().startswith("{"):
        profile = json.loads(profile)
    if isinstance(profile, AugmentationProfile):
        return profile
    if isinstance(profile, dict):
        fields = dict(profile)
        base = get_profile(fields.pop("base", "train"))
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        return dataclasses.replace(base, **fields)
    if profile not in PROFILES:
        raise ValueError(f"unknown augmentation profile {profile!r}; known: {', '.join(PROFILES)}")
    return PROFILES[profile]


class RandomDownUp(torch.nn.Module):
    """Resize down by a random factor, then back up: the interpolation traces of a resized upload."""

    def __init__(self, factor: tuple[float, float]):
        super().__init__()
        self.factor = factor

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        f = torch.empty(1).uniform_(*self.factor).item()
        small = v2.functional.resize(img, [max(1, round(h * f)), max(1, round(w * f))], antialias=True)
        return v2.functional.resize(small, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)


class ShortSideAtLeast(torch.nn.Module):
    """Upscale (bicubic) an image whose short side is below `size`; leave larger ones at their native pixels."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, img):
        h, w = v2.functional.get_size(img)
        if min(h, w) >= self.size:
            return img
        return v2.functional.resize(img, self.size, interpolation=InterpolationMode.BICUBIC, antialias=True)


class ShareSiteReencode(torch.nn.Module):
    """PIL -> PIL: what a sharing site does to an upload. Downscale by a random factor (never below 64 px), then
    encode once as JPEG (random quality and chroma subsampling 4:4:4, 4:2:2 or 4:2:0) or WebP, and sometimes
    encode the result again (a re-share of a re-share)."""

    SUBSAMPLING = (0, 1, 2)  # Pillow's 4:4:4, 4:2:2, 4:2:0

    def __init__(self, scale: tuple[float, float], quality: tuple[int, int], webp_p: float, second_p: float):
        super().__init__()
        self.scale, self.quality, self.webp_p, self.second_p = scale, quality, webp_p, second_p

    def _encode(self, img):
        buf = io.BytesIO()
        quality = random.randint(*self.quality)
        if random.random() < self.webp_p:
            img.save(buf, "WEBP", quality=quality)
        else:
            img.save(buf, "JPEG", quality=quality, subsampling=random.choice(self.SUBSAMPLING))
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    def forward(self, img):
        f = random.uniform(*self.scale)
        w, h = img.size
        size = (max(64, round(w * f)), max(64, round(h * f)))
        if size[0] < w:
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)
        img = self._encode(img.convert("RGB"))
        return self._encode(img) if random.random() < self.second_p else img


def _maybe(transform, p: float) -> list:
    return [v2.RandomApply([transform], p=p)] if p > 0 else []


def build_train_transform(profile: str | dict | AugmentationProfile, image_size: int, mean, std,
                          interpolation: str = "bicubic") -> v2.Compose:
    """PIL image -> normalised float tensor (3, image_size, image_size).

    The crop runs on the PIL image (cheap: it shrinks the image first); the rest runs on a uint8 tensor, where
    torchvision's JPEG transform works and every op stays in one format.
    """
    p = get_profile(profile)
    # A convnet with global pooling takes any size: small native patches train fast and keep traces at their scale
    image_size = p.crop_size or image_size
    if p.crop == "native":
        crop = [ShortSideAtLeast(image_size), v2.RandomCrop(image_size)]
    elif p.crop == "resized":
        crop = [v2.RandomResizedCrop(image_size, scale=p.scale, ratio=p.ratio,
                                     interpolation=InterpolationMode(interpolation), antialias=True)]
    else:
        raise ValueError(f"unknown crop {p.crop!r}: 'resized' or 'native'")
    share = ShareSiteReencode(p.share_scale, p.share_quality, p.share_webp_p, p.share_second_p)
    return v2.Compose([
        *_maybe(share, p.share_p),
        *crop,
        *([v2.RandomHorizontalFlip()] if p.hflip else []),
        v2.PILToTensor(),
        *_maybe(v2.ColorJitter(*p.jitter), p.jitter_p),
        *_maybe(RandomDownUp(p.resample), p.resample_p),
        *_maybe(v2.JPEG(p.jpeg_quality), p.jpeg_p),
        *_maybe(v2.GaussianBlur(3, sigma=p.blur_sigma), p.blur_p),
        *([v2.RandomGrayscale(p.grayscale_p)] if p.grayscale_p > 0 else []),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(mean), std=list(std)),
    ])
