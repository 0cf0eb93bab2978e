"""The evaluation CLI end to end on tiny generated folders and a tiny saved detector."""
import csv
import json
import shutil

import pytest
from conftest import TINY_ARCH, TINY_SIZE, make_image, make_image_folder
from PIL import Image

from modeling import build_detector, get_calibration, load_detector
from modeling.detector import eval_transform
from train.evaluation.predict import class_targets
from train.evaluation.run import main
from train.evaluation.metrics import METRIC_KEYS
from train.evaluation.perturbations import PERTURBATIONS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metadata_folder(root):
    """An imagefolder with metadata.csv: 4 reals from two sources, fakes from two generators (3 + 2)."""
    rows = []
    for i, source in enumerate(["photos", "photos", "faces", "faces"]):
        make_image(root / "real" / f"r{i}.jpg", 100 + i)
        rows.append((f"real/r{i}.jpg", "real", source, "none"))
    for i, generator in enumerate(["sd3", "sd3", "sd3", "gan", "gan"]):
        make_image(root / "fake" / f"f{i}.jpg", 200 + i, fake=True)
        rows.append((f"fake/f{i}.jpg", "fake", "gen-set", generator))
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "label", "source", "generator"])
        writer.writerows(rows)
    return root


def test_cli_writes_results_plots_and_saves_the_calibrated_model_to_a_new_folder(tmp_path, tiny_detector_dir,
                                                                                   image_folder):
    model_dir = shutil.copytree(tiny_detector_dir, tmp_path / "model")
    (model_dir / "model_notes.md").write_text("notes travel with the model")
    cal_dir = make_image_folder(tmp_path / "val", n_per_class=6, seed=1)
    out = tmp_path / "eval"
    main(["--model", str(model_dir), "--data_dir", str(image_folder), "--output_dir", str(out), "--robustness",
          "--calibrate", "--calibration_dir", str(cal_dir), "--target_fpr", "0.2", "--num_workers", "0",
          "--batch_size", "5"])

    results = json.loads((out / "results.json").read_text())
    for key in ("overall", "by_source", "by_generator", "robustness", "calibration", "model", "data"):
        assert key in results, key
    assert set(results["overall"]) == set(METRIC_KEYS)
    assert results["overall"]["n"] == 12 and results["data"]["n_real"] == results["data"]["n_fake"] == 6
    assert list(results["robustness"]) == list(PERTURBATIONS)
    assert all(set(m) == set(METRIC_KEYS) and m["n"] == 12 for m in results["robustness"].values())

    cal = results["calibration"]
    assert {"temperature", "threshold", "target_fpr", "fitted_on", "ece_before", "ece_after"} <= set(cal)
    assert cal["calibration_set"]["fpr"] <= 0.2
    assert cal["calibration_set"]["nll_after"] <= cal["calibration_set"]["nll_before"] + 1e-9
    assert get_calibration(load_detector(model_dir).config)["threshold"] == 0.5  # the input model is left as it was
    assert (out / "model" / "model_notes.md").read_text() == "notes travel with the model"
    assert results["model"]["name_or_path"] == str(out / "model")
    stored = get_calibration(load_detector(out / "model").config)
    assert stored["temperature"] == pytest.approx(cal["temperature"])
    assert stored["threshold"] == pytest.approx(cal["threshold"]) == pytest.approx(results["model"]["threshold"])
    assert stored["target_fpr"] == 0.2 and stored["fitted_on"] == str(cal_dir)
    low, high = stored["band"]  # fitted with the threshold, and what it does on the evaluated set
    assert low <= stored["threshold"] <= high
    decisive = results["decisive"]
    assert decisive["band"] == [low, high] and decisive["n"] == 12
    assert set(decisive) == {"band", "n", "share", "accuracy", "fake_share", "real_share"}

    md = (out / "results.md").read_text()
    for heading in ("## Overall", "## By source", "## By generator", "## Robustness", "## Calibration"):
        assert heading in md
    assert all(name in md for name in PERTURBATIONS)
    for png in ("roc.png", "scores.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC


def test_grouping_by_source_and_generator_counts(tmp_path, tiny_detector_dir):
    data = _metadata_folder(tmp_path / "data")
    out = tmp_path / "eval"
    results = main(["--model", str(tiny_detector_dir), "--data_dir", str(data), "--output_dir", str(out),
                    "--num_workers", "0"])
    assert {s: m["n"] for s, m in results["by_source"].items()} == {"faces": 2, "gen-set": 5, "photos": 2}
    assert {g: m["n"] for g, m in results["by_generator"].items()} == {"gan": 2, "none": 4, "sd3": 3}
    # A generator's fakes against all 4 reals.
    assert {g: m["n"] for g, m in results["by_generator_vs_real"].items()} == {"gan": 6, "sd3": 7}
    (tn, fp), (fn, tp) = results["by_generator"]["sd3"]["confusion_matrix"]
    assert (tn, fp, fn + tp) == (0, 0, 3)
    assert results["by_generator"]["sd3"]["roc_auc"] is None  # one class: undefined, not an error
    assert json.loads((out / "results.json").read_text())["data"]["generators"] == {"gan": 2, "none": 4, "sd3": 3}
    assert "calibration" not in results and "robustness" not in results


def test_two_data_dirs_are_pooled(tmp_path, tiny_detector_dir):
    a = make_image_folder(tmp_path / "a", n_per_class=2, seed=3)
    b = make_image_folder(tmp_path / "b", n_per_class=3, seed=4)
    results = main(["--model", str(tiny_detector_dir), "--data_dir", str(a), "--data_dir", str(b),
                    "--output_dir", str(tmp_path / "eval"), "--num_workers", "0"])
    assert results["overall"]["n"] == 10
    assert {s: m["n"] for s, m in results["by_source"].items()} == {"a": 4, "b": 6}


def test_robustness_runs_only_the_perturbations_named(tmp_path, tiny_detector_dir, image_folder):
    out = tmp_path / "eval"
    args = ["--model", str(tiny_detector_dir), "--data_dir", str(image_folder), "--output_dir", str(out),
            "--robustness", "--num_workers", "0"]
    results = main([*args, "--perturbations", "reshare_0.5_q75", "jpeg_q50"])
    assert list(results["robustness"]) == ["jpeg_q50", "reshare_0.5_q75"]  # in the sweep's order
    with pytest.raises(ValueError, match="unknown perturbations"):
        main([*args, "--perturbations", "jpeg_q1"])


def test_calibration_in_place_rewrites_the_models_own_folder_with_the_chosen_policy(tmp_path, tiny_detector_dir,
                                                                                     image_folder):
    model_dir = shutil.copytree(tiny_detector_dir, tmp_path / "model")
    cal_dir = make_image_folder(tmp_path / "val", n_per_class=4, seed=1)
    results = main(["--model", str(model_dir), "--data_dir", str(image_folder), "--output_dir", str(tmp_path / "eval"),
                    "--calibrate", "--calibration_dir", str(cal_dir), "--calibrated_model_dir", str(model_dir),
                    "--threshold_policy", "balanced_accuracy", "--num_workers", "0"])
    cal = results["calibration"]
    assert cal["threshold_policy"] == "balanced_accuracy" and cal["target_fpr"] is None
    stored = get_calibration(load_detector(model_dir).config)
    assert stored["threshold_policy"] == "balanced_accuracy" and stored["threshold"] == pytest.approx(cal["threshold"])
    assert "by policy balanced_accuracy" in (tmp_path / "eval" / "results.md").read_text()


@pytest.mark.parametrize("calibration_subdir", ["", "fake"])
def test_fitting_on_the_evaluation_folder_is_refused(tmp_path, tiny_detector_dir, image_folder, calibration_subdir):
    with pytest.raises(ValueError, match="Refusing"):
        main(["--model", str(tiny_detector_dir), "--data_dir", str(image_folder), "--output_dir",
              str(tmp_path / "eval"), "--calibrate", "--calibration_dir",
              str(image_folder / calibration_subdir), "--num_workers", "0"])
    assert not (tmp_path / "eval" / "results.json").exists()


def test_calibrate_needs_a_calibration_folder(tmp_path, tiny_detector_dir, image_folder):
    with pytest.raises(SystemExit, match="needs --calibration_dir"):
        main(["--model", str(tiny_detector_dir), "--data_dir", str(image_folder), "--output_dir",
              str(tmp_path / "eval"), "--calibrate"])


def test_eval_transform_is_the_models_own(tiny_detector_dir):
    # After loading, timm_model.pretrained_cfg holds timm's 224-px defaults; the detector's config says 32 px.
    model = load_detector(tiny_detector_dir)
    x = eval_transform(model)(Image.new("RGB", (70, 50), (120, 30, 200)))
    assert tuple(x.shape) == (3, TINY_SIZE, TINY_SIZE)
    assert x[0].mean().item() == pytest.approx((120 / 255 - 0.485) / 0.229, abs=1e-4)  # ImageNet normalisation


def test_class_targets_follow_the_models_label_order():
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE, labels=("fake", "real"))
    assert class_targets([0, 1, 1], model.config).tolist() == [1, 0, 0]


@pytest.mark.parametrize("input_filter, device, dtype", [
    (None, "cuda", "float16"), ("npr", "cuda", None), ("npr_half", "cuda", None), (None, "cpu", None)])
def test_scoring_autocasts_to_fp16_only_on_cuda_and_never_a_model_with_an_input_filter(input_filter, device, dtype):
    """A content-blind stem reads pixel differences of one grey level, which fp16 rounds away (train/run.py refuses
    to train such a model under autocast): it is scored in fp32 like everywhere else."""
    import torch
    from types import SimpleNamespace

    from train.evaluation.predict import autocast_dtype

    config = SimpleNamespace(input_filter=input_filter)
    assert autocast_dtype(config, torch.device(device)) == (getattr(torch, dtype) if dtype else None)


def test_plots_of_dozens_of_generators_save_without_layout_warnings(tmp_path):
    import warnings

    import numpy as np

    from train.evaluation.plots import plot_reliability, plot_roc, plot_score_histograms

    rng = np.random.default_rng(0)
    labels, probs = rng.integers(0, 2, 600), rng.random(600)
    generators = np.array(["none" if label == 0 else f"generator {i % 60} with a long descriptive name"
                           for i, label in enumerate(labels)], dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_roc(labels, probs, tmp_path / "roc.png", generators=generators)
        plot_score_histograms(labels, probs, tmp_path / "scores.png", 0.5)
        plot_reliability(labels, probs, tmp_path / "reliability.png", before=probs)
    assert (tmp_path / "roc.png").read_bytes()[:8] == PNG_MAGIC
