"""Image perturbations for the robustness sweep: what happens to an image on its way across the internet.

Each one takes and returns an RGB PIL image and is applied to the original file, before the model's own eval
preprocessing (resize + centre crop), so the model sees what a user would upload after that degradation.
"""
from __future__ import annotations

import io
from functools import partial

from PIL import Image, ImageFilter


def jpeg(img: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at `quality` (Pillow's default 4:2:0 chroma subsampling, like most uploads)."""
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def downscale(img: Image.Image, factor: float) -> Image.Image:
    """Each side times `factor` (at least one pixel), bicubic."""
    w, h = img.size
    return img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.BICUBIC)


def down_up(img: Image.Image, factor: float) -> Image.Image:
    """Downscale by `factor` then back to the original size (bicubic both ways): the detail a thumbnail loses."""
    return downscale(img, factor).resize(img.size, Image.BICUBIC)


def gaussian_blur(img: Image.Image, sigma: float) -> Image.Image:
    # Pillow's GaussianBlur "radius" is the standard deviation.
    return img.filter(ImageFilter.GaussianBlur(radius=sigma))


def center_crop(img: Image.Image, fraction: float) -> Image.Image:
    """Keep the centre `fraction` of each side (0.5 keeps a quarter of the area); the model's eval transform then
    resizes it up, as it would a cropped upload."""
    w, h = img.size
    cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def reshare(img: Image.Image, factor: float, quality: int) -> Image.Image:
    """What a sharing site delivers: the upload downscaled by `factor` (bicubic, not scaled back up) and
    re-encoded as JPEG at `quality` with 4:2:0 chroma subsampling."""
    return jpeg(downscale(img.convert("RGB"), factor), quality)


# The sweep of `python -m train.evaluation --robustness`, in the order of its table.
PERTURBATIONS = {
    "jpeg_q95": partial(jpeg, quality=95),
    "jpeg_q75": partial(jpeg, quality=75),
    "jpeg_q50": partial(jpeg, quality=50),
    "down_up_0.5": partial(down_up, factor=0.5),
    "down_up_0.25": partial(down_up, factor=0.25),
    "blur_sigma1": partial(gaussian_blur, sigma=1.0),
    "center_crop_0.5": partial(center_crop, fraction=0.5),
    "reshare_0.5_q75": partial(reshare, factor=0.5, quality=75),
}
