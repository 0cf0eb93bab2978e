"""Metrics, calibration and perturbations against values worked out by hand."""
import numpy as np
import pytest
from PIL import Image

from train.evaluation.calibration import (
    check_not_evaluated,
    decisive_metrics,
    fit_band,
    fit_temperature,
    nll,
    threshold_for_fpr,
)
from train.evaluation.metrics import (
    METRIC_KEYS,
    detection_metrics,
    expected_calibration_error,
    fake_probs_from_logits,
    grouped_metrics,
    load_detection_metric,
    tpr_at_fpr,
)
from train.evaluation.perturbations import PERTURBATIONS, center_crop, down_up, gaussian_blur, jpeg, reshare

# 5 reals and 5 fakes. At threshold 0.5: reals 0.55 and 0.70 are false positives, fake 0.40 is missed.
LABELS = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
PROBS = [0.05, 0.15, 0.30, 0.55, 0.70, 0.40, 0.60, 0.80, 0.90, 0.95]


def test_metrics_match_hand_computed_values():
    m = detection_metrics(LABELS, PROBS, threshold=0.5)
    assert set(m) == set(METRIC_KEYS)
    assert m["n"] == 10
    assert m["confusion_matrix"] == [[3, 2], [1, 4]]  # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["balanced_accuracy"] == pytest.approx((4 / 5 + 3 / 5) / 2)
    assert m["precision"] == pytest.approx(4 / 6)
    assert m["recall"] == pytest.approx(4 / 5)
    assert m["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))
    # Fake-over-real pairs: 0.40 beats 3 reals, 0.60 beats 4, the other three beat all 5 -> 22 of 25.
    assert m["roc_auc"] == pytest.approx(22 / 25)
    # Ranked: F F F R F R F ...: precision at each fake = 1, 1, 1, 4/5, 5/7.
    assert m["average_precision"] == pytest.approx((1 + 1 + 1 + 4 / 5 + 5 / 7) / 5)
    # No real may be flagged at 1% or 5% FPR with 5 reals: only the fakes above 0.70 (3 of 5) are caught.
    assert m["tpr_at_1pct_fpr"] == pytest.approx(3 / 5)
    assert m["tpr_at_5pct_fpr"] == pytest.approx(3 / 5)
    # Every score is alone in its 1/15-wide bin, so ECE = mean |p - label|.
    assert m["ece"] == pytest.approx((0.05 + 0.15 + 0.30 + 0.55 + 0.70 + 0.60 + 0.40 + 0.20 + 0.10 + 0.05) / 10)


def test_threshold_moves_the_counts_and_is_inclusive():
    m = detection_metrics(LABELS, PROBS, threshold=0.6)  # p == threshold counts as fake
    assert m["confusion_matrix"] == [[4, 1], [1, 4]]
    assert m["roc_auc"] == pytest.approx(22 / 25)  # threshold-free


def test_tpr_at_fpr_distinguishes_1_and_5_percent():
    # 100 reals: 97 at 0.1 and three at 0.6, 0.7, 0.8. Allowing 1 false positive catches the fakes above 0.7;
    # allowing 5 (all three high reals) catches every fake.
    labels = [0] * 100 + [1] * 10
    probs = [0.1] * 97 + [0.6, 0.7, 0.8] + [0.95, 0.85, 0.75, 0.65] + [0.5] * 6
    assert tpr_at_fpr(labels, probs, 0.01) == pytest.approx(0.3)
    assert tpr_at_fpr(labels, probs, 0.05) == pytest.approx(1.0)
    m = detection_metrics(labels, probs)
    assert (m["tpr_at_1pct_fpr"], m["tpr_at_5pct_fpr"]) == pytest.approx((0.3, 1.0))


def test_ece_with_shared_bins():
    # Bin [1/15, 2/15): 0.10 and 0.12, mean 0.11, one of two fake -> gap 0.39.
    # Bin [13/15, 14/15): 0.90 and 0.91, mean 0.905, both fake -> gap 0.095. Each bin holds half the images.
    assert expected_calibration_error([0, 1, 1, 1], [0.10, 0.12, 0.90, 0.91]) == pytest.approx(
        0.5 * 0.39 + 0.5 * 0.095)
    assert expected_calibration_error([1, 1], [1.0, 1.0]) == pytest.approx(0.0)  # p = 1 falls in the last bin


def test_undefined_metrics_are_none():
    fakes_only = detection_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert fakes_only["roc_auc"] is None and fakes_only["balanced_accuracy"] is None
    assert fakes_only["tpr_at_1pct_fpr"] is None and fakes_only["tpr_at_5pct_fpr"] is None
    assert fakes_only["recall"] == pytest.approx(2 / 3) and fakes_only["average_precision"] == pytest.approx(1.0)
    reals_only = detection_metrics([0, 0], [0.1, 0.2])
    assert reals_only["precision"] is None and reals_only["recall"] is None and reals_only["f1"] is None
    assert reals_only["average_precision"] is None and reals_only["accuracy"] == 1.0
    empty = detection_metrics([], [])
    assert empty["n"] == 0 and all(empty[k] is None for k in METRIC_KEYS if k not in ("n", "confusion_matrix"))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        detection_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        detection_metrics([0, 2], [0.5, 0.5])


def test_grouped_metrics_counts():
    groups = ["sd3", "none", "gan", "none", "sd3", "gan", "none", "sd3"]
    labels = [1, 0, 1, 0, 1, 1, 0, 1]
    probs = [0.9, 0.2, 0.3, 0.6, 0.8, 0.7, 0.1, 0.4]
    out = grouped_metrics(labels, probs, groups, threshold=0.5)
    assert list(out) == ["gan", "none", "sd3"]
    assert {g: m["n"] for g, m in out.items()} == {"gan": 2, "none": 3, "sd3": 3}
    assert out["gan"]["confusion_matrix"] == [[0, 0], [1, 1]]
    assert out["none"]["confusion_matrix"] == [[2, 1], [0, 0]]
    assert out["sd3"]["confusion_matrix"] == [[0, 0], [1, 2]]
    assert out["sd3"]["recall"] == pytest.approx(2 / 3)


def test_fake_probs_from_logits_uses_the_fake_column():
    logits = [[0.0, np.log(3.0)], [1000.0, -1000.0]]  # the second would overflow a naive softmax
    assert fake_probs_from_logits(logits, fake_index=1) == pytest.approx([0.75, 0.0])
    assert fake_probs_from_logits(logits, fake_index=0) == pytest.approx([0.25, 1.0])


def test_evaluate_module_wraps_the_same_function():
    metric = load_detection_metric()
    out = metric.compute(predictions=PROBS, references=LABELS, threshold=0.5)
    expected = detection_metrics(LABELS, PROBS, 0.5)
    assert out.pop("confusion_matrix") == expected.pop("confusion_matrix") == [[3, 2], [1, 4]]
    assert out == pytest.approx(expected)


# --- calibration -------------------------------------------------------------------------------------------------

def test_temperature_fit_lowers_nll_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 1.5, 3000)
    labels = (rng.random(3000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros_like(true_logit), 8 * true_logit], axis=1)  # 8x over-confident
    temperature = fit_temperature(logits, labels)
    assert 6 < temperature < 10.5
    assert nll(logits, labels, temperature) < nll(logits, labels) - 0.5
    probs_before = fake_probs_from_logits(logits)
    probs_after = fake_probs_from_logits(logits / temperature)
    assert expected_calibration_error(labels, probs_after) < expected_calibration_error(labels, probs_before) / 2


def test_threshold_for_fpr_bounds_false_positives():
    labels = [0] * 100 + [1, 1]
    probs = list(np.arange(100) / 100) + [0.942, 0.3]
    # 5 of 100 reals may sit above: 0.95..0.99. The highest real kept below is 0.94; the next score up is 0.942.
    t = threshold_for_fpr(labels, probs, 0.05)
    assert t == pytest.approx((0.94 + 0.942) / 2)
    (tn, fp), _ = detection_metrics(labels, probs, t)["confusion_matrix"]
    assert fp == 5
    assert threshold_for_fpr([0, 0, 1], [0.2, 0.4, 0.3], 0.0) == pytest.approx((0.4 + 1.0) / 2)
    with pytest.raises(ValueError):
        threshold_for_fpr([1, 1], [0.2, 0.4], 0.05)


def test_calibration_folder_must_not_overlap_evaluation(tmp_path):
    val, ood = tmp_path / "val", tmp_path / "ood"
    check_not_evaluated(val, [ood])  # siblings are fine
    for cal, data in ((ood, [val, ood]), (tmp_path, [ood]), (ood / "fake", [ood])):
        with pytest.raises(ValueError, match="Refusing"):
            check_not_evaluated(cal, data)


# --- perturbations -----------------------------------------------------------------------------------------------

def _photo(size=(64, 48), seed=0) -> Image.Image:
    """Smooth gradients plus noise: something JPEG and resampling visibly change."""
    rng = np.random.default_rng(seed)
    w, h = size
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    arr = np.stack([x, y, (x + y) / 2], axis=-1) + rng.normal(0, 25, (h, w, 3))
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def _diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean())


def test_jpeg_lower_quality_loses_more():
    img = _photo()
    q95, q75, q50 = (jpeg(img, q) for q in (95, 75, 50))
    assert all(p.size == img.size and p.mode == "RGB" for p in (q95, q75, q50))
    assert 0 < _diff(img, q95) < _diff(img, q75) < _diff(img, q50)


def test_down_up_keeps_size_and_loses_detail():
    img = _photo()
    half, quarter = down_up(img, 0.5), down_up(img, 0.25)
    assert half.size == quarter.size == img.size
    assert 0 < _diff(img, half) < _diff(img, quarter)


def test_gaussian_blur_has_sigma_one():
    # A vertical line blurs into a Gaussian profile whose variance is sigma^2.
    line = np.zeros((21, 41, 3), np.uint8)
    line[:, 20] = 255
    blurred = gaussian_blur(Image.fromarray(line), 1.0)
    assert blurred.size == (41, 21)
    profile = np.asarray(blurred, dtype=float)[10, :, 0]
    w = profile / profile.sum()
    x = np.arange(41)
    assert (w * x).sum() == pytest.approx(20)
    assert (w * (x - 20) ** 2).sum() == pytest.approx(1.0, abs=0.15)


def test_center_crop_halves_each_side_and_keeps_the_centre_pixels():
    img = _photo(size=(64, 48))
    crop = center_crop(img, 0.5)
    assert crop.size == (32, 24)
    assert np.array_equal(np.asarray(crop), np.asarray(img)[12:36, 16:48])


def test_reshare_delivers_the_downscaled_jpeg_not_an_upscaled_copy():
    img = _photo(size=(64, 48))
    out = reshare(img, 0.5, 75)
    assert out.size == (32, 24) and out.mode == "RGB"
    assert np.array_equal(np.asarray(out), np.asarray(jpeg(img.resize((32, 24), Image.BICUBIC), 75)))


def test_robustness_sweep_is_jpeg_rescaling_blur_crop_and_reshare_each_changing_the_image():
    assert list(PERTURBATIONS) == ["jpeg_q95", "jpeg_q75", "jpeg_q50", "down_up_0.5", "down_up_0.25",
                                   "blur_sigma1", "center_crop_0.5", "reshare_0.5_q75"]
    img = _photo()
    for name, perturb in PERTURBATIONS.items():
        out = perturb(img)
        changed = out.size != img.size or _diff(img, out) > 0
        assert out.mode == "RGB" and changed, name


# --- the verdict band --------------------------------------------------------------------------------------------

# Ten scores around a threshold of 0.5, worked by hand: reals 0.1 0.2 0.3 0.45 0.55, fakes 0.4 0.52 0.6 0.7 0.9.
BAND_LABELS = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
BAND_PROBS = [0.1, 0.2, 0.3, 0.45, 0.55, 0.4, 0.52, 0.6, 0.7, 0.9]


def test_band_is_the_narrowest_whose_outside_verdicts_reach_the_accuracy():
    # No band (0.5, 0.5): 8 of 10 right. [0.35, 0.575]: 0.1 0.2 0.3 real, 0.6 0.7 0.9 fake, all 6 right; no
    # narrower pair reaches 90% (e.g. [0.35, 0.535] calls 0.55 fake: 6 of 7 = 86%).
    assert fit_band(BAND_LABELS, BAND_PROBS, 0.5, accuracy=0.9) == pytest.approx([0.35, 0.575])
    assert fit_band(BAND_LABELS, BAND_PROBS, 0.5, accuracy=0.8) == pytest.approx([0.5, 0.5])  # already 80% right
    low, high = fit_band(BAND_LABELS, BAND_PROBS, 0.5, accuracy=0.85)
    assert low <= 0.5 <= high and high - low < 0.575 - 0.35


def test_band_that_no_cut_can_make_right_leaves_every_verdict_uncertain(caplog):
    assert fit_band([1, 0, 1, 0], [0.1, 0.3, 0.5, 0.8], 0.4, accuracy=0.9) == [0.0, 1.0]
    assert "every verdict will be Uncertain" in caplog.text


def test_decisive_record_counts_what_the_band_decides():
    record = decisive_metrics(BAND_LABELS, BAND_PROBS, [0.35, 0.575])
    assert record == {"band": [0.35, 0.575], "n": 10, "share": 0.6, "accuracy": 1.0, "fake_share": 0.6,
                      "real_share": 0.6}
    wide = decisive_metrics(BAND_LABELS, BAND_PROBS, [0.0, 1.0])
    assert wide["share"] == 0.0 and wide["accuracy"] is None
