"""modeling.imageio: every kind of bad or odd input the app and the training data meet."""
import io

import numpy as np
import pytest
from PIL import Image

from conftest import encode_image as encode
from conftest import png_bomb
from modeling.imageio import MAX_BYTES, ImageReadError, read_image, to_rgb


def noise(w=48, h=40, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def solid(colour, mode="RGB", size=(16, 12)) -> Image.Image:
    return Image.new(mode, size, colour)


# --- inputs that must be refused, each with a message a person understands ----------------------------------

@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"Just some text, renamed to photo.jpg\n" * 10, "not an image"),
    (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n", "not an image"),  # EPS would run Ghostscript
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "not an image"),
])
def test_refuses_non_images(data, words):
    with pytest.raises(ImageReadError, match=words):
        read_image(data)


def test_truncated_jpeg_is_refused():
    data = encode(noise(200, 160), "JPEG", quality=90)
    with pytest.raises(ImageReadError, match="truncated or corrupt"):
        read_image(data[: len(data) // 2])


def test_corrupt_png_is_refused():
    data = bytearray(encode(noise(64, 64), "PNG"))
    data[60:200] = bytes(140)  # zero out part of the compressed IDAT stream
    with pytest.raises(ImageReadError, match="corrupt"):
        read_image(bytes(data))


def test_header_only_is_refused():
    with pytest.raises(ImageReadError):
        read_image(encode(noise(), "PNG")[:40])


def test_over_20_mb_is_refused_bytes_and_path(tmp_path):
    big = tmp_path / "big.jpg"
    with big.open("wb") as f:  # sparse: 21 MB on paper, no time spent writing it
        f.truncate(21 * 2**20)
    with pytest.raises(ImageReadError, match=r"too large \(21\.0 MB\); the limit is 20 MB"):
        read_image(big)
    data = encode(noise(), "PNG")
    with pytest.raises(ImageReadError, match="too large"):
        read_image(data + bytes(MAX_BYTES))  # trailing bytes after a valid PNG still count


def test_over_16_megapixels_is_refused_before_decoding():
    data = encode(Image.new("1", (5000, 4000)), "PNG")  # 20 MP, a few KB on disk
    assert len(data) < 100_000
    with pytest.raises(ImageReadError, match=r"5000 x 4000 = 20\.0 megapixels.*limit is 16 megapixels"):
        read_image(data)


def test_decompression_bomb_is_refused():
    data = png_bomb(20_000)  # 400 megapixels in ~50 KB: Pillow's own bomb check fires at open time
    assert len(data) < 200_000 and Image.open(io.BytesIO(png_bomb(64))).size == (64, 64)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(data)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ImageReadError, match="Could not open"):
        read_image(tmp_path / "nope.jpg")


def test_limits_are_arguments():
    data = encode(noise(100, 100), "PNG")
    with pytest.raises(ImageReadError, match="megapixels"):
        read_image(data, max_pixels=5_000)
    with pytest.raises(ImageReadError, match="too large"):
        read_image(data, max_bytes=100)
    assert read_image(data).size == (100, 100)


# --- odd but valid images, converted properly ---------------------------------------------------------------

def test_rgb_jpeg_from_bytes_and_path_agree(tmp_path):
    path = tmp_path / "a.jpg"
    noise().save(path, quality=95)
    from_path, from_bytes = read_image(path), read_image(path.read_bytes())
    assert from_path.mode == "RGB" and from_path.size == (48, 40)
    assert np.array_equal(np.asarray(from_path), np.asarray(from_bytes))
    assert np.array_equal(np.asarray(from_path), np.asarray(Image.open(path).convert("RGB")))


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animation_gives_first_frame(fmt):
    frames = [solid((255, 0, 0)), solid((0, 0, 255)), solid((0, 255, 0))]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                  **({"lossless": True} if fmt == "WEBP" else {}))
    assert Image.open(io.BytesIO(data)).n_frames == 3
    img = read_image(data)
    assert img.mode == "RGB"
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert r > 240 and g < 15 and b < 15  # red, the first frame


def test_cmyk_jpeg_becomes_the_right_rgb():
    cmyk_red = solid((0, 255, 255, 0), mode="CMYK")  # no cyan, full magenta and yellow: red
    img = read_image(encode(cmyk_red, "JPEG", quality=95))
    r, g, b = np.asarray(img).reshape(-1, 3).mean(0)
    assert img.mode == "RGB" and r > 240 and g < 15 and b < 15


def test_16_bit_grayscale_is_rescaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    img = read_image(encode(Image.fromarray(ramp), "PNG"))
    a = np.asarray(img)
    assert img.mode == "RGB" and (a[..., 0] == a[..., 1]).all()
    assert a.max() == 255 and a.min() == 0
    assert abs(a[16, 32, 0] - ramp[16, 32] / 257) <= 1  # mid-grey stays mid-grey (Pillow's convert gives 255)


def test_16_bit_tiff_is_rescaled():
    img = read_image(encode(Image.fromarray(np.full((8, 8), 32768, np.uint16)), "TIFF"))
    assert abs(int(np.asarray(img)[0, 0, 0]) - 128) <= 1


def test_float_tiff_in_unit_range_is_scaled():
    img = read_image(encode(Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F"), "TIFF"))
    assert abs(int(np.asarray(img)[0, 0, 0]) - 128) <= 1


def test_palette_with_transparency_goes_on_white():
    pal = solid((0, 0, 255)).convert("P")
    blue_index = pal.getpixel((0, 0))
    pal.putpixel((0, 0), (blue_index + 1) % 256)
    pal.info["transparency"] = (blue_index + 1) % 256
    img = read_image(encode(pal, "PNG"))
    a = np.asarray(img)
    assert tuple(a[0, 0]) == (255, 255, 255)  # the transparent pixel
    assert tuple(a[5, 5]) == (0, 0, 255)


def test_palette_without_transparency():
    img = read_image(encode(noise().quantize(16), "PNG"))
    assert img.mode == "RGB" and img.size == (48, 40)


def test_alpha_is_composited_on_white():
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black
    a = np.asarray(read_image(encode(rgba, "PNG")))
    assert tuple(a[0, 0]) == (255, 255, 255)
    assert all(abs(int(v) - 127) <= 2 for v in a[0, 1])
    assert tuple(a[5, 5]) == (255, 0, 0)


def test_grayscale_and_la_and_bilevel():
    for mode, colour in (("L", 77), ("LA", (77, 255)), ("1", 1)):
        img = read_image(encode(solid(colour, mode=mode), "PNG"))
        a = np.asarray(img)
        assert img.mode == "RGB" and (a[..., 0] == a[..., 2]).all()
        assert a[0, 0, 0] == (255 if mode == "1" else 77)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 20))  # white stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = read_image(encode(img, "JPEG", exif=exif, quality=95))
    assert out.size == (20, 40)
    a = np.asarray(out).mean(2)
    assert a[:10].mean() > 200 and a[-10:].mean() < 50  # the stripe is now on top


@pytest.mark.filterwarnings("ignore:Corrupt EXIF")
def test_corrupt_exif_does_not_fail_a_readable_image():
    data = bytearray(encode(noise(), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + bytes(30)))
    img = read_image(bytes(data))
    assert img.size == (48, 40)


def test_to_rgb_modes():
    for mode in ("RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr"):
        assert to_rgb(Image.new(mode, (4, 3))).mode == "RGB", mode
    rgb = noise()
    assert to_rgb(rgb) is rgb  # nothing copied when nothing changes


def test_other_formats(tmp_path):
    for fmt in ("BMP", "TIFF", "WEBP", "PNG"):
        assert read_image(encode(noise(), fmt)).size == (48, 40), fmt
