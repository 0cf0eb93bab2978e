"""The verbs users know (save_pretrained, push_to_hub, the Trainer's checkpoints and save_model) each write a folder
that pipeline(), AutoModel and timm all load, with the same logits: timm's key names and `model_args: {}`."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import transformers.utils.hub
from conftest import TINY_ARCH
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification, pipeline

from modeling import build_detector, load_detector
from modeling.detector import eval_transform
from train.data import collate
from train.trainer import DetectorTrainer, DetectorTrainingArguments

SIZE = 64  # a 2x2 last-stage grid: logits depend on every weight


def assert_loads_everywhere(folder: Path, model) -> None:
    weights = load_file(folder / "model.safetensors")
    assert "head.fc.weight" in weights and not [k for k in weights if k.startswith("timm_model.")]
    assert json.loads((folder / "config.json").read_text())["model_args"] == {}
    model = model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model(pixel_values=x).logits
        auto = AutoModelForImageClassification.from_pretrained(folder).eval()(pixel_values=x).logits
        net = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()(x)
    torch.testing.assert_close(auto, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(net, expected, atol=1e-5, rtol=0)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 72, 3), dtype=np.uint8))
    scores = {o["label"]: o["score"] for o in pipeline("image-classification", model=str(folder))(image)}
    with torch.no_grad():
        probs = model(pixel_values=eval_transform(model)(image)[None]).logits.softmax(-1)[0]
    assert scores == pytest.approx({"real": float(probs[0]), "fake": float(probs[1])}, abs=1e-5)


@pytest.fixture
def model():
    return build_detector(TINY_ARCH, pretrained=False, image_size=SIZE)


def test_save_pretrained(tmp_path, model):
    model.save_pretrained(tmp_path / "saved")
    assert_loads_everywhere(tmp_path / "saved", model)


def test_save_pretrained_of_a_loaded_model(tmp_path, model):
    model.save_pretrained(tmp_path / "first")
    loaded = load_detector(tmp_path / "first")
    loaded.save_pretrained(tmp_path / "again")
    assert_loads_everywhere(tmp_path / "again", model)


class _LocalHub:
    """A stand-in for transformers' HfApi that 'uploads' each commit into a local folder (offline)."""

    def __init__(self, root: Path):
        self.root = root

    def create_repo(self, repo_id, **kwargs):
        class Url:
            pass

        url = Url()
        url.repo_id = repo_id
        return url

    def create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            target = self.root / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(op.path_or_fileobj, target)


def test_push_to_hub(tmp_path, model, monkeypatch):
    hub = _LocalHub(tmp_path / "hub")
    monkeypatch.setattr(transformers.utils.hub, "hf_api", lambda: hub)
    monkeypatch.setattr(transformers.utils.hub, "create_and_tag_model_card",
                        lambda repo_id, tags=None, **kwargs: transformers.utils.hub.ModelCard(""))
    model.push_to_hub("me/detector")
    assert_loads_everywhere(tmp_path / "hub" / "me" / "detector", model)


class _Tiny(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"pixel_values": torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(i)),
                "labels": i % 2, "source_ids": 0}


def test_trainer_checkpoint_and_save_model(tmp_path, model):
    args = DetectorTrainingArguments(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none", max_steps=1,
                                     per_device_train_batch_size=4, save_strategy="steps", save_steps=1,
                                     eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    trainer = DetectorTrainer(model=model, args=args, train_dataset=_Tiny(), data_collator=collate)
    trainer.train()
    assert_loads_everywhere(tmp_path / "run" / "checkpoint-1", trainer.model)
    trainer.save_model(str(tmp_path / "final"))
    assert_loads_everywhere(tmp_path / "final", trainer.model)
