"""train/soup.py: the weight average of several detectors loads everywhere a detector loads."""
import json

import pytest
import timm
import torch
from conftest import TINY_ARCH, TINY_SIZE

from modeling import build_detector, constrain_input_filter, load_detector, save_detector
from train.soup import average_state_dicts, main


def _detector(folder, seed, input_filter=None):
    torch.manual_seed(seed)
    model = build_detector(TINY_ARCH, pretrained=False, image_size=TINY_SIZE)
    if input_filter:
        model.config.input_filter = input_filter
        constrain_input_filter(model)
    save_detector(model, folder)
    (folder / "training_config.json").write_text(json.dumps({"phase": "initial", "image_size": TINY_SIZE}))
    return model


def test_soup_is_the_mean_of_its_ingredients_and_loads_in_timm(tmp_path):
    a, b = _detector(tmp_path / "a", seed=0), _detector(tmp_path / "b", seed=1)
    out = main([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "soup")])

    soup = load_detector(out)
    name = "timm_model.stem.0.weight"
    assert not torch.equal(a.state_dict()[name], b.state_dict()[name])
    torch.testing.assert_close(soup.state_dict()[name], (a.state_dict()[name] + b.state_dict()[name]) / 2)
    assert soup.config.soup_of == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert json.loads((out / "training_config.json").read_text())["phase"] == "initial"
    net = timm.create_model("local-dir:" + str(out), pretrained=True).eval()
    x = torch.randn(1, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net(x), soup.eval()(pixel_values=x).logits, atol=1e-5, rtol=0)


def test_soup_of_content_blind_stems_stays_content_blind(tmp_path):
    _detector(tmp_path / "a", seed=0, input_filter="npr")
    _detector(tmp_path / "b", seed=1, input_filter="npr")
    stem = load_detector(main([str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "soup")]))
    weight = stem.timm_model.stem[0].weight
    assert weight.abs().max() > 1e-3
    assert weight.view(*weight.shape[:2], 2, 2, 2, 2).sum(dim=(3, 5)).abs().max() < 1e-5


def test_soup_of_trainer_checkpoints_takes_the_runs_training_record(tmp_path):
    for seed, name in enumerate(("checkpoint-500", "checkpoint-1000")):
        _detector(tmp_path / "run" / name, seed=seed)
        (tmp_path / "run" / name / "training_config.json").unlink()  # as the Trainer saves a checkpoint
    (tmp_path / "run" / "training_config.json").write_text(json.dumps({"phase": "continual"}))
    out = main([str(tmp_path / "run" / "checkpoint-500"), str(tmp_path / "run" / "checkpoint-1000"),
                "--output", str(tmp_path / "soup")])
    assert json.loads((out / "training_config.json").read_text()) == {"phase": "continual"}


def test_ingredients_of_other_shapes_are_refused():
    with pytest.raises(ValueError, match="another architecture"):
        average_state_dicts([{"w": torch.zeros(2)}, {"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="at least two"):
        main(["one_model", "--output", "x"])
