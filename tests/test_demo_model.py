"""The bundled demo model (checkpoints/demo/): loads everywhere a user would load it, and carries its card."""
from pathlib import Path

import pytest
import timm
import torch
import yaml
from conftest import model_probabilities
from transformers import pipeline

from modeling import get_calibration, load_detector
from modeling.formats import read_training_record
from modeling.imageio import read_image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "demo"
EXAMPLES = ROOT / "examples"


def test_demo_model_is_small_safetensors_with_card_and_results():
    files = {p.name for p in DEMO.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "training_config.json"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    assert (DEMO / "model.safetensors").stat().st_size <= 25 * 2**20
    assert (DEMO / "eval_ood" / "results.json").is_file()
    card = (DEMO / "README.md").read_text()
    assert "not a production detector" in card and "model-index" in card


def test_demo_model_is_calibrated_content_blind_and_loads_in_timm():
    model = load_detector(DEMO).eval()
    cal = get_calibration(model.config)
    assert cal["fitted_on"].endswith("val") and 0 < cal["threshold"] < 1 and cal["temperature"] != 1.0
    stem = model.timm_model.stem[0].weight
    assert stem.view(*stem.shape[:2], 2, 2, 2, 2).sum(dim=(3, 5)).abs().max() < 1e-5  # npr constraint held
    net = timm.create_model("local-dir:" + str(DEMO), pretrained=True).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(pixel_values=x).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("image", sorted(EXAMPLES.glob("*.jpg"))[:2], ids=lambda p: p.name)
def test_demo_model_pipeline_scores_an_example(image):
    out = pipeline("image-classification", model=str(DEMO))(str(image))
    expected = model_probabilities(DEMO, read_image(image))
    assert {o["label"]: o["score"] for o in out} == pytest.approx(expected, abs=1e-5)


def test_demo_config_is_the_recipe_the_shipped_model_recorded():
    """train/configs/demo.yaml reproduces checkpoints/demo: every setting it names is what the shipped run used
    (only where the run wrote its output differs)."""
    config = yaml.safe_load((ROOT / "train" / "configs" / "demo.yaml").read_text())
    config.pop("output_dir")
    config["report_to"] = [config["report_to"]]  # TrainingArguments records the flag as a list
    recorded = read_training_record(DEMO).settings()
    differ = {key: (value, recorded.get(key)) for key, value in config.items() if value != recorded.get(key)}
    assert not differ, f"demo.yaml vs the shipped model's training_config.json: {differ}"


def test_demo_results_were_measured_in_the_view_the_app_serves():
    """The card's and the page's numbers (eval_ood/results.json) hold for the view config.scoring names."""
    import json

    from modeling.formats import read_results, scoring_from

    served = scoring_from(json.loads((DEMO / "config.json").read_text()).get("scoring"))
    measured = read_results(DEMO / "eval_ood" / "results.json")["model"]
    assert scoring_from(measured.get("scoring")) == served
    assert measured["calibration"] == get_calibration(load_detector(DEMO).config)
