"""python -m train.aligned: aligned (real crop, autoencoder reconstruction) pairs, with the bundled taef2 weights."""
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from train.aligned.autoencoders import TinyAutoencoder, load_autoencoder
from train.aligned.run import BUNDLED_TAEF2, crop_boxes, main, reconstruct

COLUMNS = ["file_name", "label", "source", "generator", "origin", "license"]


def smooth_image(seed, size):
    """Low-frequency, mildly coloured content, which taef2 reproduces at 31-39 dB. (Saturated random hues are far
    from natural photos and come back at ~25 dB, so they would make a weak test of a wrong architecture.)"""
    rng = np.random.default_rng(seed)
    base = rng.integers(70, 180, (2, 2, 1)) + rng.integers(-20, 20, (2, 2, 3))
    return Image.fromarray(base.astype(np.uint8)).resize(size, Image.BICUBIC)


def read_rows(folder):
    with open(folder / "metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == COLUMNS
        return list(reader)


def psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return 10 * np.log10(255**2 / mse)


@pytest.fixture
def imagefolder(tmp_path):
    root = tmp_path / "in"
    rows = []
    for i, lic in enumerate(["MIT", "CC-BY-4.0"]):
        (root / "real").mkdir(parents=True, exist_ok=True)
        smooth_image(i, (48, 40)).save(root / "real" / f"photo{i}.jpg", quality=95)
        rows.append([f"real/photo{i}.jpg", "real", "src", "none", f"o/r@c:photo{i}", lic])
    (root / "fake").mkdir()
    smooth_image(9, (40, 40)).save(root / "fake" / "gen.jpg")
    rows.append(["fake/gen.jpg", "fake", "sd", "SD1.5", "o/r@c:gen", "MIT"])
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS] + rows)
    return root


def test_plain_folder_gives_fake_imagefolder_with_unknown_license(tmp_path):
    src, out = tmp_path / "plain", tmp_path / "out"
    src.mkdir()
    smooth_image(0, (50, 40)).save(src / "a.jpg")
    smooth_image(1, (20, 24)).save(src / "b.png")  # smaller than the crop: upscaled first
    main(["--input_dir", str(src), "--output_dir", str(out), "--crop_size", "32", "--crops_per_image", "2"])

    rows = read_rows(out)
    assert len(rows) == 4 and not (out / "real").exists()
    assert {r["origin"].split("#")[0] for r in rows} == {"a.jpg", "b.png"}
    for r in rows:
        assert r["label"] == "fake" and r["file_name"].startswith("fake/")
        assert (r["generator"], r["source"], r["license"]) == ("taef2", "aligned-taef2", "unknown")
        with Image.open(out / r["file_name"]) as im:
            assert im.size == (32, 32) and im.format == "JPEG"
    assert len({r["file_name"] for r in rows}) == 4  # two distinct crops per image


def test_imagefolder_pairs_are_aligned_and_inherit_license(imagefolder, tmp_path):
    out = tmp_path / "out"
    main(["--input_dir", str(imagefolder), "--output_dir", str(out), "--crop_size", "32", "--write_reals"])

    rows = read_rows(out)
    fakes = {r["file_name"].split("/", 1)[1]: r for r in rows if r["label"] == "fake"}
    reals = {r["file_name"].split("/", 1)[1]: r for r in rows if r["label"] == "real"}
    assert len(fakes) == 2 and fakes.keys() == reals.keys()  # the input's fake row is not used
    for name, fake in fakes.items():
        real = reals[name]
        assert fake["origin"] == real["origin"] and fake["origin"].startswith("real/photo")
        expected = {"real/photo0.jpg": "MIT", "real/photo1.jpg": "CC-BY-4.0"}[fake["origin"].split("#")[0]]
        assert fake["license"] == real["license"] == expected
        assert (fake["generator"], real["generator"]) == ("taef2", "none")
        a, b = Image.open(out / "real" / name), Image.open(out / "fake" / name)
        assert a.size == b.size == (32, 32)
        assert not np.array_equal(np.asarray(a), np.asarray(b))
        assert psnr(a, b) > 28  # same content: differs only by decoder traces (and JPEG)


def test_reconstruction_is_close_but_not_identical_and_keeps_odd_sizes():
    model = load_autoencoder(BUNDLED_TAEF2)
    crops = [np.asarray(smooth_image(s, (36, 44))) for s in range(2)]  # not multiples of 8
    with torch.inference_mode():
        recons = reconstruct(model, crops)
    assert recons.shape == (2, 44, 36, 3) and recons.dtype == np.uint8
    for crop, recon in zip(crops, recons):
        assert 28 < psnr(crop, recon) < 60


def test_bf16_encoder_keeps_the_reconstruction_close_to_fp32():
    model = load_autoencoder(BUNDLED_TAEF2)
    crops = [np.asarray(smooth_image(s, (40, 40))) for s in range(2)]
    with torch.inference_mode():
        fp32, mixed = reconstruct(model, crops), reconstruct(model, crops, encoder_bf16=True)
    assert mixed.shape == fp32.shape and mixed.dtype == np.uint8
    for crop, a, b in zip(crops, fp32, mixed):
        assert 28 < psnr(crop, b) < 60  # still a reconstruction of the same content
        assert psnr(a, b) > 35  # a bf16 encoder moves the latent, and so the reconstruction, only a little


def test_rerun_resumes_instead_of_redoing(imagefolder, tmp_path, capsys):
    args = ["--input_dir", str(imagefolder), "--output_dir", str(tmp_path / "out"), "--crop_size", "32"]
    main(args + ["--limit", "1"])
    main(args)
    assert "1 crops already done" in capsys.readouterr().out
    assert len(read_rows(tmp_path / "out")) == 2


def test_crops_are_seeded_and_distinct():
    import random

    boxes = crop_boxes(40, 36, 32, 5, random.Random("0:x"))
    assert boxes == crop_boxes(40, 36, 32, 5, random.Random("0:x"))
    assert len(set(boxes)) == 5 and all(x1 - x0 == y1 - y0 == 32 for x0, y0, x1, y1 in boxes)
    assert crop_boxes(32, 32, 32, 3, random.Random(0)) == [(0, 0, 32, 32)]  # one position, no duplicates


def test_wrong_state_dict_fails_loudly(tmp_path):
    folder = tmp_path / "taef2"
    folder.mkdir()
    dec = torch.load(BUNDLED_TAEF2 / "taef2_decoder.pth", weights_only=True)
    enc = torch.load(BUNDLED_TAEF2 / "taef2_encoder.pth", weights_only=True)
    enc["11.pool.9.weight"] = enc.pop("11.pool.3.weight")
    torch.save(enc, folder / "taef2_encoder.pth")
    torch.save(dec, folder / "taef2_decoder.pth")
    with pytest.raises(RuntimeError, match="pool"):
        load_autoencoder(folder)
    with pytest.raises(RuntimeError):  # the plain TAESD architecture (no pool branch) does not fit FLUX.2 weights
        TinyAutoencoder(pool=False).decoder.load_state_dict(dec, strict=True)


def test_non_taesd_name_needs_diffusers_or_hub(tmp_path):
    with pytest.raises(SystemExit, match="diffusers|Hub"):
        load_autoencoder(str(tmp_path / "no-such-vae"))


def test_reals_are_decoded_by_the_projects_safe_reader(tmp_path):
    """A 16-bit PNG is scaled to 8 bits (not clipped to white) and a transparent one composited on white, exactly
    as modeling.imageio.read_image decodes it for training and serving."""
    from modeling.imageio import read_image
    from train.aligned.run import load_rgb

    deep = tmp_path / "deep.png"
    Image.fromarray(np.linspace(0, 65535, 40 * 48).reshape(40, 48).astype(np.uint16)).save(deep)
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (48, 40), (0, 0, 0, 0)).save(clear)
    for path in (deep, clear):
        assert np.array_equal(np.asarray(load_rgb(path, 32)), np.asarray(read_image(path)))


def test_unreadable_and_oversized_reals_are_skipped_with_their_reason(tmp_path, capsys):
    from conftest import png_bomb

    src, out = tmp_path / "in", tmp_path / "out"
    (src / "real").mkdir(parents=True)
    smooth_image(0, (48, 40)).save(src / "real" / "photo.jpg")
    (src / "real" / "notes.jpg").write_text("a text file renamed to .jpg\n")
    (src / "real" / "bomb.png").write_bytes(png_bomb(20_000))
    main(["--input_dir", str(src), "--output_dir", str(out), "--crop_size", "32"])
    assert [r["origin"].split("#")[0] for r in read_rows(out)] == ["real/photo.jpg"]
    printed = capsys.readouterr().out
    assert "skipped real/notes.jpg: This file is not an image" in printed
    assert "skipped real/bomb.png: " in printed and "megapixels" in printed
