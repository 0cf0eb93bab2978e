"""Decode untrusted image files into the RGB image the detector sees, or fail with a message a person understands.

One function for training, evaluation and the app, so a photo is decoded the same way everywhere: the model
must not learn (or be judged on) differences between two decoders.

Why these rules:
- Size limits are checked before decoding: the header gives width x height, and a 50 KB PNG can expand to
  gigabytes (a decompression bomb). We refuse on the header, not on Pillow's global MAX_IMAGE_PIXELS, so the
  limit is an argument and not module state.
- Only common photo/web formats are opened. Pillow can also read EPS (which runs Ghostscript), PSD, ICNS and
  dozens more; each is attack surface that no user of a detector needs.
- Animations: the first frame. Alpha: composited on white (what a browser shows for a transparent PNG on a
  white page), not dropped, because dropping alpha exposes whatever colour the editor left under it.
- CMYK with an ICC profile goes through littlecms to sRGB; Pillow's plain CMYK->RGB is a naive formula
  that shifts colours visibly. 16-bit images are scaled to 8 bits (Pillow's convert clips them at 255,
  turning most of the picture white).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

MAX_BYTES = 20 * 2**20
MAX_PIXELS = 16_000_000
# Pillow format names we decode (the JPEG opener also returns MPO, the multi-picture JPEG many phones write).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
# The file names a folder of images is read by (training data, evaluation, aligned data): those formats' suffixes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})
_BACKGROUND = (255, 255, 255)


class ImageReadError(ValueError):
    """The input is not an image we can read; the message is meant to be shown to the person who sent it."""


def _read_bytes(data: bytes | bytearray | memoryview | str | Path, max_bytes: int) -> bytes:
    if isinstance(data, (str, Path)):
        path = Path(data)
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ImageReadError(f"Could not open the file {path.name!r}: {e.strerror or e}.") from e
        if size > max_bytes:  # checked before reading: never pull a huge upload into memory
            raise ImageReadError(_too_big_message(size, max_bytes))
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageReadError(f"Could not read the file {path.name!r}: {e.strerror or e}.") from e
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"read_image takes bytes or a path, not {type(data).__name__}")
    data = bytes(data)
    if len(data) == 0:
        raise ImageReadError("The file is empty (0 bytes). Please upload an image file.")
    if len(data) > max_bytes:
        raise ImageReadError(_too_big_message(len(data), max_bytes))
    return data


def read_file_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """A file's bytes within read_image's size limit (checked before reading), or ImageReadError: for callers that
    need the bytes as well as the image, so the file is read once."""
    return _read_bytes(Path(path), max_bytes)


def _too_big_message(size: int, max_bytes: int) -> str:
    return (f"The file is too large ({size / 2**20:.1f} MB); the limit is {max_bytes / 2**20:.0f} MB. "
            "Please upload a smaller or compressed copy.")


def _scale_to_uint8(img: Image.Image) -> Image.Image:
    """16-bit ("I;16*", "I") or float ("F") single-channel image -> 8-bit "L", keeping the full tonal range."""
    a = np.asarray(img)
    if img.mode == "F":
        a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        a = a * 255.0 if a.size and a.max() <= 1.0 else a  # floats are usually in [0, 1]
    else:
        a = a.astype(np.float64)
        a = a / 257.0 if a.size and (img.mode.startswith("I;16") or a.max() > 255) else a  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def _cmyk_to_rgb(img: Image.Image) -> Image.Image:
    icc = img.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            return ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass  # a broken profile: fall back to Pillow's formula rather than refusing a readable image
    return img.convert("RGB")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = _BACKGROUND) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. Transparency is composited on `background`; 16-bit and float are
    rescaled, not clipped; CMYK uses its ICC profile when it has one."""
    if img.mode == "RGB":
        return img
    if img.mode == "CMYK":
        return _cmyk_to_rgb(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _scale_to_uint8(img).convert("RGB")
    has_alpha = img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (
        img.mode in ("P", "L", "RGB", "1") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def read_image(data: bytes | str | Path, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an untrusted image (bytes or a path) into an RGB PIL image with EXIF orientation applied.

    Raises ImageReadError (a ValueError) with a human-readable message for anything that is not a readable
    image within the limits: empty, too many bytes, too many pixels, unknown format, truncated or corrupt.
    """
    raw = _read_bytes(data, max_bytes)
    Image.init()  # registers every plugin (AVIF...); open(formats=...) only sees registered ones
    try:
        img = Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError as e:
        raise ImageReadError(
            "This file is not an image we can read. Supported formats: JPEG, PNG, WebP, GIF, BMP, TIFF and AVIF."
        ) from e
    except Image.DecompressionBombError as e:
        raise ImageReadError(_too_many_pixels_message(None, max_pixels)) from e
    except Exception as e:  # noqa: BLE001 - a corrupt header can raise almost anything inside a plugin
        raise ImageReadError(f"The image file is corrupt and could not be read ({_short(e)}).") from e
    with img:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise ImageReadError("The image has no pixels (its width or height is zero).")
        if width * height > max_pixels:
            raise ImageReadError(_too_many_pixels_message((width, height), max_pixels))
        try:
            img.seek(0)  # the first frame of an animated GIF/WebP/APNG (and of a multi-page TIFF)
            img.load()
            rgb = to_rgb(_orient(img))
            if rgb is img:  # keep the result valid after the file closes
                rgb = img.copy()
        except Image.DecompressionBombError as e:
            raise ImageReadError(_too_many_pixels_message((width, height), max_pixels)) from e
        except MemoryError as e:
            raise ImageReadError("The image is too large to decode.") from e
        except Exception as e:  # noqa: BLE001 - truncated data surfaces as OSError, SyntaxError, struct.error...
            raise ImageReadError(
                f"The image file is truncated or corrupt and could not be decoded ({_short(e)}). "
                "Try re-saving or re-exporting it.") from e
    return rgb


def _orient(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation. A malformed EXIF block is ignored rather than failing a readable image."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - EXIF parsing of hostile files raises many types
        return img


def _too_many_pixels_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    dims = f" ({size[0]} x {size[1]} = {size[0] * size[1] / 1e6:.1f} megapixels)" if size else ""
    return (f"The image is too large{dims}; the limit is {max_pixels / 1e6:.0f} megapixels. "
            "Please upload a downscaled copy.")


def _short(e: Exception, limit: int = 120) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
