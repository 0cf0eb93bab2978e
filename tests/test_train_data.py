"""train/data/ and train/transforms.py: folders and Hub-style sources, bad files, replay, augmentation profiles,
and run.py's config-file parsing."""
import dataclasses
import json
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import make_image, make_image_folder
from PIL import Image

from train.data import (
    IGNORE_INDEX,
    EpochSampler,
    SourceSpec,
    StreamingImageSamples,
    build_eval_data,
    build_training_data,
    collate,
    decode_image,
    load_image_folder,
    load_source,
    stratified_quota,
)
from train.transforms import PROFILES, build_train_transform, get_profile

SIZE = 32
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)


def make_transform(profile):
    return build_train_transform(profile, SIZE, MEAN, STD)


# ---- folders ----------------------------------------------------------------------------------------------

def test_load_image_folder_subfolders(tmp_path):
    ds = load_image_folder(make_image_folder(tmp_path / "mysource", n_per_class=3))
    assert ds.column_names == ["image", "label", "source", "generator"]
    assert Counter(ds["label"]) == {0: 3, 1: 3}
    assert set(ds["source"]) == {"mysource"}
    assert {(r["label"], r["generator"]) for r in ds.select_columns(["label", "generator"])} == {
        (0, "none"), (1, "unknown")}
    assert isinstance(ds[0]["image"], Image.Image)


def test_load_image_folder_metadata_layout(tmp_path):
    root = make_image_folder(tmp_path / "split", n_per_class=2)
    rows = ["file_name,label,source,generator",
            "real/r0.jpg,real,photos,none", "real/r1.jpg,real,pets,none",
            "fake/f0.jpg,fake,sd,SD1.5", "fake/f1.jpg,,sd,SDXL",  # label from the folder
            "fake/missing.jpg,fake,sd,SD1.5"]                      # listed but absent: skipped
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    ds = load_image_folder(root)
    assert len(ds) == 4
    assert list(zip(ds["label"], ds["source"], ds["generator"])) == [
        (0, "photos", "none"), (0, "pets", "none"), (1, "sd", "SD1.5"), (1, "sd", "SDXL")]


def test_source_cap_is_seeded_and_exact(tmp_path):
    root = make_image_folder(tmp_path / "s", n_per_class=10)
    a = load_source(SourceSpec.parse(str(root), max_samples=7), seed=1)
    b = load_source(SourceSpec.parse(str(root), max_samples=7), seed=1)
    c = load_source(SourceSpec.parse(str(root), max_samples=7), seed=2)
    paths = lambda ds: [r["path"] for r in ds["image"]]  # noqa: E731
    assert len(a) == 7 and paths(a) == paths(b) and paths(a) != paths(c)


def test_source_spec_validation():
    with pytest.raises(ValueError, match="unknown keys"):
        SourceSpec.parse({"path": "x", "profle": "light"})
    with pytest.raises(ValueError, match="exactly one"):
        SourceSpec.parse({"name": "x"})
    spec = SourceSpec.parse({"path": "x", "max_samples": 5}, profile="light", max_samples=9)
    assert (spec.profile, spec.max_samples) == ("light", 5)  # the spec wins over defaults


# ---- Hub-style sources (a local parquet dataset: the same load_dataset code path, offline) ----------------

def _hub_dataset(tmp_path, n=6):
    images = [make_image(tmp_path / "img" / f"{i}.png", i, fmt="PNG", fake=i % 2 == 0) for i in range(n)]
    ds = datasets.Dataset.from_dict(
        {"img": [str(p) for p in images], "truth": [i % 2 for i in range(n)], "model": ["gan"] * n},
        features=datasets.Features({"img": datasets.Image(), "truth": datasets.ClassLabel(names=["AI", "Human"]),
                                    "model": datasets.Value("string")}))
    folder = tmp_path / "hubset"
    folder.mkdir()
    ds.to_parquet(str(folder / "train.parquet"))
    return folder


def test_hub_source_label_map_and_columns(tmp_path):
    spec = SourceSpec.parse({"hub": str(_hub_dataset(tmp_path)), "image_column": "img", "label_column": "truth",
                             "label_map": {"AI": "fake", "Human": "real"}, "generator_column": "model",
                             "name": "gans"})
    ds = load_source(spec)
    assert ds.column_names == ["image", "label", "source", "generator"]
    assert ds["label"][:4] == [1, 0, 1, 0]  # AI (class 0 of the set) -> fake = 1
    assert set(ds["source"]) == {"gans"}
    assert ds["generator"][:2] == ["gan", "none"]
    assert decode_image(ds[0]["image"], 2**20, 10**6).size == (48, 40)  # not decoded until asked
    with pytest.raises(ValueError, match="label_map"):
        load_source(SourceSpec.parse({"hub": str(_hub_dataset(tmp_path / "b")), "image_column": "img",
                                      "label_column": "truth", "label_map": {"AI": "fake"}}))


def test_streaming_source_yields_samples(tmp_path, monkeypatch):
    # datasets sleeps 5 s after streaming local parquet (a pyarrow thread-shutdown workaround): not for tests
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    spec = SourceSpec.parse({"hub": str(_hub_dataset(tmp_path)), "image_column": "img", "label_column": "truth",
                             "label_map": {"AI": "fake", "Human": "real"}, "streaming": True, "profile": "light"})
    dataset, sampler, summary = build_training_data([spec], make_transform)
    assert isinstance(dataset, StreamingImageSamples) and sampler is None and summary["streaming"]
    samples = list(dataset)
    assert len(samples) == 6 and samples[0]["pixel_values"].shape == (3, SIZE, SIZE)
    assert Counter(s["labels"] for s in samples) == {0: 3, 1: 3}


# ---- bad files --------------------------------------------------------------------------------------------

def write_bad_files(folder: Path) -> int:
    good = make_image(folder / "fake" / "tmp.jpg", 99, size=(64, 64), fake=True).read_bytes()
    (folder / "fake" / "tmp.jpg").unlink()
    (folder / "fake" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "fake" / "empty.jpg").write_bytes(b"")
    (folder / "real" / "text.jpg").write_text("not an image at all")
    return 3


def test_unreadable_images_become_counted_placeholders(tmp_path, caplog):
    root = make_image_folder(tmp_path / "dirty", n_per_class=3)
    n_bad = write_bad_files(root)
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(root / "real" / "cmyk.jpg")  # odd but good: used
    samples = build_eval_data([SourceSpec.parse(str(root))], make_transform("light")).samples
    with caplog.at_level("WARNING"):
        items = [samples[i] for i in range(len(samples))]
    labels = [s["labels"] for s in items]
    assert labels.count(IGNORE_INDEX) == n_bad
    assert len(labels) - n_bad == 7
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == n_bad
    batch = collate(items)
    assert batch["pixel_values"].shape == (len(items), 3, SIZE, SIZE) and (batch["labels"] == -100).sum() == n_bad



@pytest.mark.parametrize("crop", ["resized", "native"])
def test_unreadable_image_in_a_batch_of_smaller_crops(tmp_path, crop):
    """A profile whose crop_size (32) is below the model's image_size (64), as demo.yaml's 128 vs
    256, and one text file named .jpg among 16 JPEGs. The placeholder must have the shape of the crop this row's
    transform makes, or collate cannot stack the batch and one bad file stops the run."""
    root = make_image_folder(tmp_path / "data", n_per_class=8, size=(80, 72))
    (root / "real" / "broken.jpg").write_text("a text file renamed to .jpg")
    profile = {"base": "train", "crop": crop, "crop_size": 32}
    dataset, sampler, _ = build_training_data(
        [SourceSpec.parse(str(root), profile=profile)], lambda p: build_train_transform(p, 64, MEAN, STD))
    loader = torch.utils.data.DataLoader(dataset, batch_size=17, sampler=sampler, collate_fn=collate)
    (batch,) = list(loader)
    assert batch["pixel_values"].shape == (17, 3, 32, 32)
    assert (batch["labels"] == IGNORE_INDEX).sum() == 1

# ---- replay -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, total, expected", [
    ([100, 100, 100], 30, [10, 10, 10]),
    ([100, 4, 100], 30, [13, 4, 13]),      # the short pool gives all; the others top up
    ([100, 100, 100], 31, [11, 10, 10]),
    ([5, 3, 0], 20, [5, 3, 0]),           # never more than the pools hold
    ([], 10, []),
])
def test_stratified_quota(sizes, total, expected):
    assert stratified_quota(sizes, total) == expected


def test_replay_proportions_and_per_epoch_redraw():
    new = range(10)
    pools = {"a": range(100, 200), "b": range(200, 205), "c": range(300, 400)}  # b runs short
    sampler = EpochSampler(new, pools, n_replay=80, seed=3)
    assert len(sampler) == 90
    rows = {}
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        keys = list(sampler)
        rows[epoch] = [r for r, _ in keys]
        assert len(keys) == 90 and len(set(rows[epoch])) == 90  # no row twice in an epoch
        assert set(range(10)) <= set(rows[epoch])  # every new row, every epoch
        per_pool = Counter(next(k for k, v in pools.items() if r in v) for r in rows[epoch] if r >= 100)
        assert per_pool == {"a": 38, "b": 5, "c": 37} or per_pool == {"a": 37, "b": 5, "c": 38}
    assert set(rows[0]) != set(rows[1])  # a new replay draw each epoch
    again = EpochSampler(new, pools, n_replay=80, seed=3)
    again.set_epoch(1)
    assert [r for r, _ in again] == rows[1]  # a function of (seed, epoch): resumable, same on every rank
    other = EpochSampler(new, pools, n_replay=80, seed=4)
    other.set_epoch(1)
    assert [r for r, _ in other] != rows[1]


def test_training_data_with_rehearsal(tmp_path):
    new = make_image_folder(tmp_path / "new", n_per_class=2)  # 4 new images
    old1 = make_image_folder(tmp_path / "old1", n_per_class=6, seed=1)
    old2 = make_image_folder(tmp_path / "old2", n_per_class=1, seed=2)  # 2 images: runs short
    dataset, sampler, summary = build_training_data(
        [SourceSpec.parse(str(new), profile="continual")], make_transform, seed=0,
        rehearsal_specs=[SourceSpec.parse(str(old1)), SourceSpec.parse(str(old2), profile="light")],
        rehearsal_ratio=2.0)
    assert len(dataset) == 4 + 12 + 2 and len(sampler) == 4 + 8
    assert summary["replay"]["pools"] == {"old1": 12, "old2": 2}
    keys = list(sampler)
    by_source = Counter(dataset.rows[r]["source"] for r, _ in keys)
    assert by_source == {"new": 4, "old1": 6, "old2": 2}
    assert list(summary["profiles"]) == ["continual", "train", "light"]  # each source keeps its own profile
    assert [dataset.row_transform[r] for r in (0, 4, 16)] == [0, 1, 2]


def test_augmentation_is_a_function_of_the_sample_seed(tmp_path):
    root = make_image_folder(tmp_path / "s", n_per_class=2, size=(80, 64))
    dataset, sampler, _ = build_training_data([SourceSpec.parse(str(root))], make_transform, seed=0)
    a, b, c = dataset[(1, 1234)], dataset[(1, 1234)], dataset[(1, 999)]
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert not torch.equal(a["pixel_values"], c["pixel_values"])


# ---- transforms -------------------------------------------------------------------------------------------

def test_profiles_match_the_recipe():
    train, light, continual = PROFILES["train"], PROFILES["light"], PROFILES["continual"]
    assert (train.scale, train.ratio, train.jpeg_quality, train.jpeg_p) == ((0.6, 1.0), (0.85, 1.15), (80, 95), 0.3)
    assert (train.resample, train.blur_p, train.grayscale_p) == ((0.80, 0.95), 0.2, 0.03)
    assert (light.scale, light.ratio, light.jpeg_p, light.jitter_p) == ((0.75, 1.0), (0.9, 1.1), 0, 0)
    assert (continual.scale, continual.jitter, continual.jpeg_quality) == ((0.85, 1.0), (0.03, 0.03, 0.03, 0.01),
                                                                          (88, 98))
    assert get_profile({"base": "light", "jpeg_p": 0.5}).jpeg_p == 0.5
    assert get_profile('{"base": "native", "crop_size": 96, "scale": [0.5, 1]}') == dataclasses.replace(
        PROFILES["native"], crop_size=96, scale=(0.5, 1))
    with pytest.raises(ValueError, match="unknown augmentation profile"):
        get_profile("heavy")


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("height, width", [(50, 70), (12, 20)])  # larger and smaller than the crop
def test_train_transform_output(profile, height, width):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8))
    torch.manual_seed(0)
    out = build_train_transform(profile, SIZE, MEAN, STD)(img)
    assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
    assert -1.0 - 1e-6 <= out.min() and out.max() <= 1.0 + 1e-6  # normalised with mean = std = 0.5


def test_native_profile_crops_native_pixels():
    pixels = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    profile = get_profile({"base": "native", "hflip": False, "jitter_p": 0, "resample_p": 0, "jpeg_p": 0,
                           "blur_p": 0, "grayscale_p": 0})
    out = build_train_transform(profile, SIZE, (0, 0, 0), (1, 1, 1))(Image.fromarray(pixels))
    crop = (out * 255).round().byte().permute(1, 2, 0).numpy()
    windows = [(y, x) for y in range(40 - SIZE + 1) for x in range(48 - SIZE + 1)
               if np.array_equal(pixels[y:y + SIZE, x:x + SIZE], crop)]
    assert windows  # an unresampled window of the original


def test_profile_crop_size_trains_on_small_patches_of_a_larger_model():
    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8))
    profile = {"base": "native", "crop_size": 16}
    assert build_train_transform(profile, SIZE, MEAN, STD)(img).shape == (3, 16, 16)


def test_light_profile_keeps_pixels_untouched_apart_from_crop_and_flip():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    profile = get_profile({"base": "light", "scale": [1.0, 1.0], "ratio": [1.0, 1.0], "hflip": False})
    out = build_train_transform(profile, SIZE, (0, 0, 0), (1, 1, 1))(img)
    assert torch.allclose(out * 255, torch.from_numpy(np.array(img)).permute(2, 0, 1).float(), atol=1e-3)


# ---- config files (run.py) --------------------------------------------------------------------------------

def test_config_file_with_flag_overrides(tmp_path):
    from train.run import parse_args

    config = {"model_name_or_path": "convnextv2_atto", "pretrained": False, "image_size": 48,
              "output_dir": str(tmp_path / "out"), "learning_rate": "7.5e-5", "layer_decay": 0.85,
              "train_sources": [{"path": "a", "profile": "light", "max_samples": 10}, "b"],
              "rehearsal_sources": ["old"], "num_train_epochs": 5, "report_to": "none", "use_cpu": True}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    model_args, data_args, args = parse_args([str(path), "--layer_decay", "0.7", "--train_dirs", "x", "y"])
    assert model_args.pretrained is False and model_args.image_size == 48
    assert args.learning_rate == 7.5e-5 and args.num_train_epochs == 5
    assert args.layer_decay == 0.7  # the flag overrides the file
    assert data_args.train_sources[0] == {"path": "a", "profile": "light", "max_samples": 10}
    assert data_args.train_dirs == ["x", "y"] and data_args.rehearsal_sources == ["old"]
    assert args.weight_decay == 0.02 and args.label_smoothing_factor == 0.05  # recipe defaults
    (tmp_path / "bad.yaml").write_text("learning_rate: 1e-4\nlayer_decy: 0.8\n")
    with pytest.raises(ValueError, match="layer_decy"):
        parse_args([str(tmp_path / "bad.yaml")])


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[1] / "train" / "configs").rglob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_configs_parse(config):
    from train.run import parse_args

    model_args, data_args, args = parse_args([str(config), "--use_cpu", "--report_to", "none"])
    sources = [*data_args.train_sources, *data_args.validation_sources, *data_args.rehearsal_sources]
    specs = [SourceSpec.parse(s) for s in sources]  # every key known, path xor hub
    assert specs and all(get_profile(s.profile) for s in specs)
    assert args.learning_rate > 0 and 0 < args.layer_decay <= 1
