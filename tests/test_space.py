"""The packaged Space serves from the converted model shipped beside it, with only its inference requirements:
torch, timm and transformers are blocked from importing, as on a Space that installed requirements.txt alone."""
import json
import os
import subprocess
import sys

import pytest

from conftest import hub_cache_with, make_image

from hub.push import space_files, write_dry_run
from modeling.imageio import read_image
from modeling.inference import Detector

BLOCKED = ("torch", "timm", "transformers", "datasets", "onnxruntime", "nncf")
SERVE = f"""
import importlib.abc, json, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is not installed on this Space")

sys.meta_path.insert(0, Block())
import app  # what the Hub's Gradio SDK runs
from space.api import predict_files
from space.loading import load_app_detector
from space.page import build_demo

detector, warning = load_app_detector(sys.argv[1])
build_demo(detector, warning)
result = predict_files(detector, [sys.argv[2]])[0][0]
print(json.dumps({{"backend": detector.backend, "label": result["label"], "p": result["fake_probability"],
                  "warning": warning}}))
"""


def test_packaged_space_serves_from_its_cache_without_torch(tmp_path, tiny_detector_dir):
    config = json.loads((tiny_detector_dir / "config.json").read_text())
    commit = space_files("me/detector-demo", "me/detector", config, model_dir=tiny_detector_dir)
    space = write_dry_run({"space": commit}, tmp_path / "dry", tiny_detector_dir)["space"]
    requirements = (space / "requirements.txt").read_text()
    assert not any(f"\n{name}==" in requirements for name in BLOCKED)
    photo = make_image(tmp_path / "photo.jpg", seed=4)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_CACHE_DIR")}
    out = subprocess.run([sys.executable, "-s", "-c", SERVE, str(tiny_detector_dir), str(photo)], cwd=space,
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served["backend"].startswith("openvino") and served["warning"] is None
    # the same answer as the full stack (torch) gives for this model and image
    expected = Detector.from_pretrained(tiny_detector_dir, backend="torch").predict(read_image(photo))
    assert served["p"] == pytest.approx(expected.fake_probability, abs=0.01)
    assert served["label"] == expected.label


SERVE_UNSET = """
import json
from space.loading import load_app_detector

detector, warning = load_app_detector(None)
print(json.dumps({"name": detector.name, "warning": warning, "input_size": list(detector.input_size)}))
"""


def test_space_without_model_id_serves_the_model_it_was_pushed_with(tmp_path, tiny_detector_dir):
    """MODEL_ID unset: the packaged Space reads space_config.json and loads that Hub repo through huggingface_hub's
    cache (offline here, from a cache populated on disk), never a random network."""
    config = json.loads((tiny_detector_dir / "config.json").read_text())
    commit = space_files("me/detector-demo", "me/detector", config, model_dir=tiny_detector_dir)
    space = write_dry_run({"space": commit}, tmp_path / "dry", tiny_detector_dir)["space"]
    cache = hub_cache_with("me/detector", tiny_detector_dir, tmp_path / "hf_cache")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MODEL_CACHE_DIR", "MODEL_ID")}
    env.update(HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-s", "-c", SERVE_UNSET], cwd=space, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served == {"name": "me/detector", "warning": None, "input_size": [32, 32]}
