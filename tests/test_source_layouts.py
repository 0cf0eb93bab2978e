"""Downloaded sets read in the layouts they ship in, through an explicit label_map (train/data/layouts.py)."""
import csv
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_image

from train.data import SourceSpec, load_source


def make_tree(root: Path, files: dict[str, int]) -> Path:
    """files: folder (relative, '/'-separated) -> number of images in it."""
    seed = 0
    for folder, n in files.items():
        for i in range(n):
            seed += 1
            make_image(root / folder / f"img{i}.jpg", seed, size=(20, 16), fake="fake" in folder.lower())
    return root


def counts(ds) -> Counter:
    return Counter(zip(ds["label"], ds["generator"]))


@pytest.mark.parametrize("files, label_map, data_dir, expected", [
    # Kaggle's nested split folders with upper-case class folders: only train/ is read
    ({"train/REAL": 3, "train/FAKE": 2, "test/REAL": 1, "test/FAKE": 1}, {"REAL": "real", "FAKE": "fake"}, "train",
     {0: 3, 1: 2}),
    # real/ai
    ({"real": 2, "ai": 4}, {"real": "real", "ai": "fake"}, None, {0: 2, 1: 4}),
    # 0_real/1_fake, and a YAML map read with int-looking keys left as text
    ({"0_real": 3, "1_fake": 1}, {"0_real": 0, "1_fake": 1}, None, {0: 3, 1: 1}),
    # the same split-and-class tree, the split chosen by skipping the other one instead of data_dir
    ({"train/REAL": 3, "train/FAKE": 2, "test/REAL": 1}, {"REAL": "real", "FAKE": "fake", "test": None}, None,
     {0: 3, 1: 2}),
])
def test_folder_layouts_are_labelled_through_the_label_map(tmp_path, files, label_map, data_dir, expected):
    root = make_tree(tmp_path / "set", files)
    ds = load_source(SourceSpec.parse({"path": str(root), "label_map": label_map, "data_dir": data_dir}))
    assert dict(Counter(ds["label"])) == expected
    assert set(ds["source"]) == {"set"}


def test_generator_folder_names_the_fakes_generator_and_skipped_splits_stay_out(tmp_path):
    """The GenImage layout: <generator>/<split>/{ai,nature}/."""
    root = make_tree(tmp_path / "tiny-genimage", {"imagenet_ai_0419_biggan/train/ai": 2,
                                                  "imagenet_ai_0419_biggan/train/nature": 2,
                                                  "imagenet_ai_0419_biggan/val/ai": 5,
                                                  "imagenet_glide/train/ai": 3})
    ds = load_source(SourceSpec.parse({"path": str(root), "label_map": {"ai": "fake", "nature": "real", "val": None},
                                       "generator_folder": 0}))
    assert counts(ds) == {(1, "imagenet_ai_0419_biggan"): 2, (0, "none"): 2, (1, "imagenet_glide"): 3}


def test_unmapped_folder_is_an_error_that_lists_the_folder_names_found(tmp_path):
    root = make_tree(tmp_path / "set", {"train/REAL": 1, "train/FAKE": 1, "train/Unsure": 1})
    with pytest.raises(ValueError) as error:
        load_source(SourceSpec.parse({"path": str(root), "label_map": {"REAL": "real", "FAKE": "fake"}}))
    message = str(error.value)
    assert "train/Unsure/" in message
    assert "['FAKE', 'REAL', 'Unsure', 'train']" in message


def test_a_path_with_two_mapped_labels_is_an_error(tmp_path):
    root = make_tree(tmp_path / "set", {"real/fake": 1})
    with pytest.raises(ValueError, match="two labels"):
        load_source(SourceSpec.parse({"path": str(root), "label_map": {"real": "real", "fake": "fake"}}))


def test_single_class_folder_with_generator_folders(tmp_path):
    """A test set of fakes only (EvalGen: one folder per generator)."""
    root = make_tree(tmp_path / "evalgen", {"FLUX": 2, "Nova": 1})
    ds = load_source(SourceSpec.parse({"path": str(root), "label": "fake", "generator_folder": 0}))
    assert counts(ds) == {(1, "FLUX"): 2, (1, "Nova"): 1}


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_csv_label_file_with_mapped_values(tmp_path):
    """The 'AI vs Human Generated' layout: train.csv (file_name, label 0/1) beside train_data/."""
    root = tmp_path / "wiai"
    for i in range(4):
        make_image(root / "train_data" / f"{i}.jpg", i, size=(20, 16))
    write_csv(root / "train.csv", ["id", "file_name", "label"],
              [[i, f"train_data/{i}.jpg", i % 2] for i in range(4)] + [[9, "train_data/missing.jpg", 1]])
    ds = load_source(SourceSpec.parse({"path": str(root), "csv": "train.csv", "image_column": "file_name",
                                       "label_map": {0: "real", 1: "fake"}}))
    assert sorted(Path(p["path"]).name for p in ds["image"]) == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert dict(Counter(ds["label"])) == {0: 2, 1: 2}

    write_csv(root / "bad.csv", ["file_name", "label"], [["train_data/0.jpg", "maybe"]])
    with pytest.raises(ValueError, match="'maybe'"):
        load_source(SourceSpec.parse({"path": str(root), "csv": "bad.csv", "image_column": "file_name",
                                      "label_map": {0: "real", 1: "fake"}}))
    with pytest.raises(ValueError, match="no column"):
        load_source(SourceSpec.parse({"path": str(root), "csv": "train.csv", "label_map": {0: "real"}}))


def test_plain_real_fake_folder_still_needs_no_map(tmp_path):
    root = make_tree(tmp_path / "plain", {"train/real": 2, "train/fake": 1})
    ds = load_source(SourceSpec.parse({"path": str(root), "data_dir": "train"}))
    assert dict(Counter(ds["label"])) == {0: 2, 1: 1}
    assert set(ds["source"]) == {"plain"}
