"""hub/: the model card (metadata, numbers, snippets) and the push (dry run, uploads against a recording HfApi,
the errors users meet). The Hub is never reached: the upload path runs against a stand-in that records calls."""
import ast
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import packages_distributions, version
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, TINY_ARCH, free_port, make_image, make_image_folder
from huggingface_hub import ModelCard, constants
from huggingface_hub.repocard_data import model_index_to_eval_results

import hub.push
from hub.card import TAGS, build_model_card
from hub.push import PushError, main, push
from modeling.formats import METRIC_NAMES, TrainingRecord, write_training_record
from train.evaluation.run import main as evaluate
from train.evaluation.metrics import detection_metrics, grouped_metrics

REPO, SPACE = "me/det", "me/det-demo"


def checksums(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def front_matter(text: str) -> dict:
    return yaml.safe_load(text.split("---\n")[1])


def synthetic_results(threshold: float, temperature: float) -> dict:
    """A results.json in the harness's format with fixed scores: 6 reals from two sources, 6 fakes of two
    generators, and a robustness sweep."""
    labels = np.array([0] * 6 + [1] * 6)
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.05, 0.9, 0.8, 0.7, 0.3, 0.95, 0.65])
    sources = ["photos"] * 3 + ["pets"] * 3 + ["gen-set"] * 6
    generators = np.array(["none"] * 6 + ["sd3"] * 3 + ["gan"] * 3, dtype=object)
    blurred = np.clip(probs * 0.8, 0, 1)
    return {
        "model": {"name_or_path": "/home/someone/model", "architecture": TINY_ARCH, "image_size": 32,
                  "threshold": threshold, "temperature": temperature},
        "data": {"dirs": ["/home/someone/data/holdout"], "n": 12, "n_real": 6, "n_fake": 6,
                 "sources": {"gen-set": 6, "pets": 3, "photos": 3}, "generators": {"gan": 3, "none": 6, "sd3": 3}},
        "overall": detection_metrics(labels, probs, threshold),
        "by_source": grouped_metrics(labels, probs, sources, threshold),
        "by_generator": grouped_metrics(labels, probs, generators, threshold),
        "by_generator_vs_real": {g: detection_metrics(labels[(labels == 0) | (generators == g)],
                                                      probs[(labels == 0) | (generators == g)], threshold)
                                 for g in ("gan", "sd3")},
        "robustness": {"blur_sigma1": detection_metrics(labels, blurred, threshold)},
    }


RECORD = TrainingRecord(  # a run of train/run.py, with a local folder and a Hub dataset
    phase="initial",
    model_args={"model_name_or_path": TINY_ARCH, "pretrained": "false", "image_size": 32, "drop_path_rate": 0.1},
    data_args={"train_dirs": ["/home/someone/data/train"], "rehearsal_ratio": 8.0, "train_profile": "train"},
    training_args={"optim": "adamw_torch", "learning_rate": 0.0002, "layer_decay": 0.8, "weight_decay": 0.02,
                   "lr_scheduler_type": "cosine", "warmup_steps": 0.05, "eta_min": 0.0,
                   "label_smoothing_factor": 0.05, "num_train_epochs": 8.0, "max_steps": -1, "seed": 42,
                   "per_device_train_batch_size": 30, "output_dir": "/home/someone/runs/x"},
    epochs=8.0, per_device_train_batch_size=30, total_train_batch_size=30, image_size=32,
    data={"train": [{"source": "train", "path": "/home/someone/data/train", "profile": "train", "n": 7000,
                     "n_real": 4000, "n_fake": 3000},
                    {"source": "pairs", "hub": "someone/coco-sd2-pairs", "split": "train", "profile": "light",
                     "n": 1000, "n_real": 500, "n_fake": 500}],
          "rehearsal": [], "validation": [{"source": "val", "path": "/home/someone/data/val", "n": 874}]},
    augmentation_profiles={"train": {"scale": [0.6, 1.0], "jpeg_p": 0.3}, "light": {"scale": [0.75, 1.0]}},
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_detector_dir):
    """A detector folder as a real pipeline leaves it: calibrated and evaluated by the harness (eval_ood/), a second
    evaluation set with fixed scores (eval_holdout/), training_config.json, eval_results.json, and files that must
    stay local (a checkpoint, a pickle)."""
    root = tmp_path_factory.mktemp("hub")
    model = Path(shutil.copytree(tiny_detector_dir, root / "model"))
    make_image_folder(root / "ood", n_per_class=4, seed=3)
    make_image_folder(root / "val", n_per_class=4, seed=4)
    evaluate(["--model", str(model), "--data_dir", str(root / "ood"), "--output_dir", str(model / "eval_ood"),
              "--calibrate", "--calibration_dir", str(root / "val"), "--calibrated_model_dir", str(model),
              "--target_fpr", "0.25",
              "--num_workers", "0"])
    cal = json.loads((model / "config.json").read_text())["calibration"]
    (model / "eval_holdout").mkdir()
    (model / "eval_holdout" / "results.json").write_text(
        json.dumps(synthetic_results(cal["threshold"], cal["temperature"])))
    write_training_record(model, RECORD)
    (model / "eval_results.json").write_text(json.dumps({  # the Trainer's, with per-source keys as train/run.py logs
        "eval_n": 8, "eval_accuracy": 0.875, "eval_roc_auc": 0.9375, "eval_pets/n": 4, "eval_pets/accuracy": 0.75,
        "eval_runtime": 1.5, "eval_samples_per_second": 5.3, "epoch": 8.0}))
    (model / "checkpoint-4").mkdir()
    (model / "checkpoint-4" / "optimizer.pt").write_bytes(b"not uploaded")
    (model / "training_args.bin").write_bytes(b"pickle, not uploaded")
    return model


@pytest.fixture(scope="module")
def card(model_dir) -> str:
    return str(build_model_card(model_dir, repo_id=REPO))


# --- The card ---------------------------------------------------------------------------------------------------------

def test_card_metadata_parses_and_model_index_holds_every_set(card, model_dir):
    meta = front_matter(card)
    assert meta["pipeline_tag"] == "image-classification" and meta["library_name"] == "transformers"
    assert set(TAGS) <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and "base_model" not in meta  # random init: no base weights
    assert meta["datasets"] == ["someone/coco-sd2-pairs"]  # the Hub source; the local folder has no id

    data = ModelCard(card).data  # huggingface_hub's own parser validates the model-index
    name, results = model_index_to_eval_results(meta["model-index"])
    assert name == data.model_name == "det"
    measured = {s: json.loads((model_dir / f"eval_{s}" / "results.json").read_text())["overall"]
                for s in ("ood", "holdout")}
    expected = {(s, k): v for s, m in measured.items() for k, v in m.items() if k in METRIC_NAMES and v is not None}
    got = {(r.dataset_name, r.metric_type): r.metric_value for r in results}
    assert got == pytest.approx(expected)
    assert measured["ood"]["precision"] is None or ("ood", "precision") in got
    assert {r.task_type for r in results} == {"image-classification"}
    assert set(meta["metrics"]) <= {r.metric_type for r in results}


def test_card_numbers_come_from_the_files(card, model_dir):
    holdout = json.loads((model_dir / "eval_holdout" / "results.json").read_text())
    config = json.loads((model_dir / "config.json").read_text())
    m = holdout["overall"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    overall_row = next(line for line in card.splitlines() if line.startswith("| `holdout` |"))
    assert overall_row.split(" | ")[1:6] == ["6", "6", f"{m['accuracy']:.3f}", f"{m['balanced_accuracy']:.3f}",
                                              f"{m['precision']:.3f}"]
    assert f"{fp / (tn + fp):.3f} | {m['roc_auc']:.3f}" in overall_row
    # Per generator: detection rate and AUC against the reals.
    gan, gan_vs_real = holdout["by_generator"]["gan"], holdout["by_generator_vs_real"]["gan"]
    assert f"| `gan` | 3 | {gan['recall']:.3f} | {gan_vs_real['roc_auc']:.3f} |" in card
    # Robustness with the change in AUC, and the weakest spots named under Limitations.
    blur = holdout["robustness"]["blur_sigma1"]
    assert f"| `blur_sigma1` | {blur['roc_auc']:.3f} | {blur['roc_auc'] - m['roc_auc']:+.3f} |" in card
    weakest = min(("gan", "sd3"), key=lambda g: holdout["by_generator"][g]["recall"])
    assert f"Weakest generator in `holdout`: `{weakest}`" in card
    # Calibration: the model's stored numbers and the fit's own measurements.
    cal = config["calibration"]
    assert f"Decision threshold: {cal['threshold']:.4f}" in card and f"Temperature: {cal['temperature']:.4f}" in card
    assert f"fake when p(fake) ≥ {cal['threshold']:.4f}" in card
    assert "chosen for a false-positive rate of at most 25%" in card
    # The recipe and the data sources with counts, without the publisher's local paths.
    for row in ("| Layer-wise LR decay (per block) | 0.8 |", "| Label smoothing | 0.05 |", "| Epochs | 8.0 |",
                "| Batch size per device | 30 |", "| Optimizer | adamw_torch |", "| Phase | initial |"):
        assert row in card
    assert card.count("| Epochs |") == 1 and "Max steps" not in card  # max_steps -1 means unset
    assert "Training images (before any replay): 8000." in card
    assert "- `light`: scale [0.75, 1.0]" in card
    assert "| training | train |" in card and "/home/someone" not in card
    assert f"| all | 8 | {0.875:.3f} | {0.9375:.3f} |" in card and "| `pets` | 4 | 0.750 | — |" in card
    assert "runtime" not in card and "per_second" not in card
    assert "[`eval/holdout/results.json`](eval/holdout/results.json)" in card
    assert "![ROC](eval/ood/roc.png)" in card and "eval/holdout/roc.png" not in card  # only plots that exist


def test_card_says_what_is_missing(tiny_detector_dir):
    card = str(build_model_card(tiny_detector_dir, repo_id=REPO))
    assert "**Not evaluated.**" in card and "model-index" not in front_matter(card)
    assert "Not recorded: no `training_config.json`" in card
    assert "The model is not calibrated" in card


def test_card_shows_the_trainers_notes(tmp_path, tiny_detector_dir):
    model_dir = tmp_path / "m"
    shutil.copytree(tiny_detector_dir, model_dir)
    assert "About this model" not in str(build_model_card(model_dir, repo_id=REPO))
    (model_dir / "model_notes.md").write_text("A small demo model trained on CPU.\n")
    card = str(build_model_card(model_dir, repo_id=REPO))
    assert "## About this model\n\nA small demo model trained on CPU." in card


def test_card_flags_results_measured_at_another_threshold(tmp_path, tiny_detector_dir):
    folder = shutil.copytree(tiny_detector_dir, tmp_path / "m")
    (folder / "results.json").write_text(json.dumps(synthetic_results(threshold=0.3, temperature=1.0)))
    card = str(build_model_card(folder))
    assert "Measured with threshold 0.3000, but this model now stores 0.5000" in card
    assert "Measured with temperature" not in card
    results = synthetic_results(0.5, 1.0)
    results["model"]["architecture"] = "resnet50"
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="another model"):
        build_model_card(folder)


def test_license_comes_from_the_base_weights(tmp_path, tiny_detector_dir):
    from modeling import build_detector, save_detector

    # Base weights from a local file: timm's registry gives their license, but a path is no Hub base_model.
    local = save_detector(build_detector(TINY_ARCH, pretrained=tiny_detector_dir / "model.safetensors",
                                         image_size=32), tmp_path / "local")
    meta = front_matter(card := str(build_model_card(local, repo_id=REPO)))
    assert meta["license"] == "cc-by-nc-4.0" and "base_model" not in meta
    assert "released under `cc-by-nc-4.0`; a model trained from them inherits that license" in card
    assert "Commercial use: the license (`cc-by-nc-4.0`) does not allow it." in card
    assert str(tmp_path) not in card

    config = json.loads((local / "config.json").read_text())
    config["base_model"] = "timm/convnextv2_atto.fcmae_ft_in1k"  # what build_detector(pretrained=True) records
    (local / "config.json").write_text(json.dumps(config))
    meta = front_matter(str(build_model_card(local, repo_id=REPO)))
    assert meta["base_model"] == "timm/convnextv2_atto.fcmae_ft_in1k" and meta["license"] == "cc-by-nc-4.0"

    del config["pretrained_cfg"]["license"]
    (local / "config.json").write_text(json.dumps(config))
    card = str(build_model_card(local, repo_id=REPO))
    assert front_matter(card)["license"] == "unknown" and "license is not recorded" in card


def test_card_snippets_run_and_agree(card, model_dir, tmp_path):
    """Each usage snippet, pointed at the local folder instead of the Hub, runs and prints the same p(fake)."""
    photo = make_image(tmp_path / "photo.jpg", seed=7, size=(64, 48))
    snippets = re.findall(r"```python\n(.*?)```", card, re.S)
    assert len(snippets) == 3
    printed = []
    for code in snippets:
        code = code.replace("hf-hub:", "local-dir:").replace(REPO, str(model_dir)).replace("photo.jpg", str(photo))
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<card snippet>", "exec"), {})
        printed.append(out.getvalue().split())
    p_fake = [float(words[-1]) for words in printed]
    assert p_fake == pytest.approx([p_fake[0]] * 3, abs=1e-4)
    threshold = json.loads((model_dir / "config.json").read_text())["calibration"]["threshold"]
    assert printed[0][0] == printed[1][0] == ("fake" if p_fake[0] >= threshold else "real")


# --- Dry run ------------------------------------------------------------------------------------------------------

@pytest.fixture
def forbid_network(monkeypatch):
    """Any Hub client use fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not touch the network")

    monkeypatch.setattr(hub.push, "HfApi", refuse)
    monkeypatch.setattr(hub.push, "get_token", refuse)
    monkeypatch.setattr(hub.push, "hf_hub_download", refuse)


def test_dry_run_writes_exactly_the_upload(tmp_path, model_dir, card, forbid_network):
    before = checksums(model_dir)
    out = push(model_dir, REPO, space_id=SPACE, dry_run=tmp_path / "dry")
    assert out == {"model": tmp_path / "dry" / "model", "space": tmp_path / "dry" / "space"}
    assert checksums(model_dir) == before

    model = out["model"]
    sources = {"config.json": "config.json", "model.safetensors": "model.safetensors",
               "training_config.json": "training_config.json", "eval_results.json": "eval_results.json",
               "eval/holdout/results.json": "eval_holdout/results.json"}
    sources.update({f"eval/ood/{n}": f"eval_ood/{n}"
                    for n in ("results.json", "results.md", "roc.png", "scores.png", "reliability.png")})
    assert {p for p, digest in checksums(model).items() if digest != "dir"} == {*sources, "README.md"}
    for path_in_repo, local in sources.items():
        assert (model / path_in_repo).read_bytes() == (model_dir / local).read_bytes(), path_in_repo
    assert (model / "README.md").read_text() == card

    space = out["space"]
    packaged = {p.relative_to(ROOT).as_posix() for folder in ("space", "modeling", "examples")
                for p in (ROOT / folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert any(p.endswith(".py") for p in packaged)
    cache = {p.relative_to(space).as_posix() for p in (space / "model_cache").rglob("*") if p.is_file()}
    assert {Path(p).suffix for p in cache} == {".xml", ".bin"}  # the converted model: the Space starts from it
    expected = {"app.py", "requirements.txt", "README.md", "space_config.json", *packaged, *cache}
    assert {p for p, digest in checksums(space).items() if digest != "dir"} == expected
    for name in ("app.py", *packaged):
        assert (space / name).read_bytes() == (ROOT / name).read_bytes(), name
    assert json.loads((space / "space_config.json").read_text()) == {"model_id": REPO}
    meta = front_matter((space / "README.md").read_text())
    pinned = re.search(r"^gradio==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == version("gradio") == pinned
    assert meta["app_file"] == "app.py" and meta["license"] == "apache-2.0" and meta["models"] == [REPO]
    assert meta["title"] and meta["emoji"] and meta["colorFrom"] and meta["colorTo"]
    assert 0 < len(meta["short_description"]) <= 60  # the Hub's limit
    requirements = (space / "requirements.txt").read_text()
    assert f"gradio=={pinned}" in requirements and "openvino==" in requirements
    assert not re.search(r"^(torch|timm|transformers|datasets|tensorboard)\b", requirements, re.M)  # inference only


def test_dry_run_refuses_to_write_into_the_model_or_over_old_files(tmp_path, model_dir, forbid_network):
    before = checksums(model_dir)
    with pytest.raises(PushError, match="into the model folder"):
        push(model_dir, REPO, dry_run=model_dir)
    with pytest.raises(PushError, match="into the model folder"):
        push(model_dir, REPO, dry_run=model_dir.parent)  # <dir>/model would be the model folder itself
    (tmp_path / "dry" / "model").mkdir(parents=True)
    (tmp_path / "dry" / "model" / "stale.txt").write_text("old")
    with pytest.raises(PushError, match="not empty"):
        push(model_dir, REPO, dry_run=tmp_path / "dry")
    assert checksums(model_dir) == before


def test_dry_run_cli_with_chosen_results(tmp_path, model_dir, forbid_network, capsys):
    holdout = model_dir / "eval_holdout" / "results.json"
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--dry_run", str(tmp_path),
                 "--results", str(holdout)]) == 0
    assert capsys.readouterr().out.strip() == f"model: {tmp_path / 'model'}"
    assert sorted(p.name for p in (tmp_path / "model" / "eval").iterdir()) == ["holdout"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert "`holdout`" in card and "`ood`" not in card


def _imported_modules(path: Path) -> set[str]:
    """Top-level modules a file imports when it is imported, leaving out optional ones (inside `try: ... except
    ImportError`) and those imported inside functions (the conversion path, needed only on a cache miss)."""
    tree = ast.parse(path.read_text())
    tree.body = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    optional = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try)
                and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                        for h in t.handlers) for stmt in t.body for n in ast.walk(stmt)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_packaged_space_imports_only_its_files_and_requirements(tmp_path, model_dir, forbid_network):
    space = push(model_dir, REPO, space_id=SPACE, dry_run=tmp_path / "dry")["space"]
    required = {re.split(r"[=<>~!\[; ]", line)[0].lower().replace("_", "-")
                for line in (space / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "-"))}
    packaged = {p.stem if p.suffix == ".py" else p.name for p in space.iterdir()}
    distributions = packages_distributions()
    for path in space.rglob("*.py"):
        if path.relative_to(space).as_posix() == "modeling/detector.py":  # the conversion path: a cache miss only
            continue
        for module in _imported_modules(path) - set(sys.stdlib_module_names) - packaged:
            dists = {d.lower().replace("_", "-") for d in distributions.get(module, [])}
            assert dists & required, f"{path.relative_to(space)} imports {module}, which the Space does not install"


@contextlib.contextmanager
def imported_from(folder: Path, *packages: str):
    """Import `packages` from `folder` instead of the repo for the duration; restores the repo's modules after."""
    def ours(name):
        return any(name == p or name.startswith(p + ".") for p in packages)

    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if ours(name)}
    try:
        for name in packages:  # by file location, in the order given (a module's imports first), not via sys.path
            path = folder / name
            spec = (importlib.util.spec_from_file_location(name, path / "__init__.py",
                                                           submodule_search_locations=[str(path)])
                    if path.is_dir() else importlib.util.spec_from_file_location(name, folder / f"{name}.py"))
            sys.modules[name] = module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        yield
    finally:
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)


def _space_env(model_dir) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MODEL_ID=str(model_dir), GRADIO_ANALYTICS_ENABLED="False")
    return env


def test_packaged_space_builds_its_ui_from_its_own_files(tmp_path, model_dir, forbid_network):
    """Import the packaged app.py from the Space folder (not the repo) and build the UI without launching it."""
    import gradio as gr

    space = push(model_dir, REPO, space_id=SPACE, dry_run=tmp_path / "dry")["space"]
    with imported_from(space, "modeling", "space", "app"):
        importlib.import_module("app")  # what the Hub's Gradio SDK runs
        loading, page = importlib.import_module("space.loading"), importlib.import_module("space.page")
        assert Path(sys.modules["modeling"].__file__).parents[1] == space
        assert Path(loading.__file__).parents[1] == space
        detector, warning = loading.load_app_detector(str(model_dir))  # what app.main() does, without launch()
        assert warning is None
        assert isinstance(page.build_demo(detector, warning), gr.Blocks)
        if (ROOT / "examples").is_dir():
            assert loading.SPACE_DIR / "examples" == space / "examples" and any((space / "examples").iterdir())


@pytest.mark.slow
def test_packaged_space_starts_on_its_own(tmp_path, model_dir, forbid_network):
    """The Space folder alone (not the repo) serves the app: it has every file the app imports."""
    space = push(model_dir, REPO, space_id=SPACE, dry_run=tmp_path / "dry")["space"]
    # -s: no user site; cwd is the Space folder, so `import modeling` can only find the packaged copy.
    port, log = free_port(), tmp_path / "space.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-s", "app.py", "--port", str(port)], cwd=space,
                                env=_space_env(model_dir), stdout=out, stderr=subprocess.STDOUT)
    try:
        status, deadline = None, time.monotonic() + 300  # a generous bound for a loaded machine, not a timing check
        while status is None and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    status = response.status
            except OSError:
                time.sleep(1)
        assert status == 200, f"the packaged Space did not start: {log.read_text()[-3000:]}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- Upload path, against a recording stand-in for HfApi -----------------------------------------------------------

class RecordingHfApi:
    """Records calls; `existing` maps repo ids to the files they hold; `fail_on` names a method that raises."""
    existing: dict[str, list[str]] = {}
    fail_on: tuple[str, str] | None = None  # (method, repo_id)
    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def _record(self, name, repo_id, **kwargs):
        self.calls.append((name, repo_id, kwargs))
        if self.fail_on == (name, repo_id):
            raise ConnectionError("Connection reset by peer")

    def whoami(self, token=None):
        self.calls.append(("whoami", token))
        return {"name": "me"}

    def repo_exists(self, repo_id, repo_type=None, token=None):
        self._record("repo_exists", repo_id)
        return repo_id in self.existing

    def list_repo_files(self, repo_id, repo_type=None, token=None):
        self._record("list_repo_files", repo_id)
        return self.existing[repo_id]

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id, **kwargs)

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self._record("add_space_variable", repo_id, key=key, value=value)

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            content = op.path_or_fileobj
            files[op.path_in_repo] = content if isinstance(content, bytes) else Path(content).read_bytes()
        self._record("create_commit", repo_id, files=files, **kwargs)
        return type("CommitInfo", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.fixture
def hf(monkeypatch):
    api = type("Api", (RecordingHfApi,), {"calls": [], "existing": {}, "fail_on": None})
    monkeypatch.setattr(hub.push, "HfApi", api)
    monkeypatch.setattr(hub.push, "get_token", lambda: "hf_stored")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return api


def _names(calls):
    return [(c[0], c[1]) for c in calls if c[0] not in ("init", "whoami")]


def test_push_uploads_each_repo_in_one_commit(tmp_path, model_dir, hf):
    before = checksums(model_dir)
    dry = push(model_dir, REPO, space_id=SPACE, dry_run=tmp_path / "dry")
    assert hf.calls == []
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--space_id", SPACE, "--private"]) == 0
    assert _names(hf.calls) == [("repo_exists", REPO), ("repo_exists", SPACE), ("create_repo", REPO),
                                ("create_commit", REPO), ("create_repo", SPACE), ("add_space_variable", SPACE),
                                ("create_commit", SPACE)]
    calls = {(c[0], c[1]): c[2] for c in hf.calls if c[0] not in ("init", "whoami")}
    assert calls[("create_repo", REPO)]["private"] is True and calls[("create_repo", SPACE)]["space_sdk"] == "gradio"
    assert calls[("add_space_variable", SPACE)] == {"key": "MODEL_ID", "value": REPO}
    for name, repo in (("model", REPO), ("space", SPACE)):  # the commits hold exactly the dry run's files
        folder = dry[name]
        expected = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        assert calls[("create_commit", repo)]["files"] == expected
    assert calls[("create_commit", SPACE)]["repo_type"] == "space"
    assert ("init", "hf_stored") in hf.calls  # the stored login when no --token
    assert checksums(model_dir) == before


def test_no_token_fails_before_any_call(model_dir, hf, monkeypatch, capsys):
    monkeypatch.setattr(hub.push, "get_token", lambda: None)
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO]) == 1
    err = capsys.readouterr().err
    assert "Not logged in" in err and "hf auth login" in err and "Nothing was uploaded" in err
    assert hf.calls == []


def test_existing_repo_with_other_content_is_refused_unless_forced(tmp_path, model_dir, hf, monkeypatch, capsys):
    foreign = tmp_path / "config.json"
    foreign.write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    monkeypatch.setattr(hub.push, "hf_hub_download", lambda repo_id, filename, token=None: str(foreign))
    hf.existing = {REPO: [".gitattributes", "config.json", "model.safetensors", "vocab.txt"]}
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO]) == 1
    err = capsys.readouterr().err
    assert "already exists with other content" in err and "--force" in err and "vocab.txt" in err
    assert not [c for c in hf.calls if c[0] in ("create_repo", "create_commit")]

    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--force"]) == 0
    assert [c[1] for c in hf.calls if c[0] == "create_commit"] == [REPO]

    # An earlier upload of the same kind of detector is updated without --force; a foreign Space is refused.
    hf.calls.clear()
    shutil.copy(model_dir / "config.json", foreign)
    hf.existing = {REPO: [".gitattributes", "README.md", "config.json", "model.safetensors"],
                   SPACE: [".gitattributes", "README.md", "app.py"]}
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--space_id", SPACE]) == 1
    assert f"space repo {SPACE} already exists" in capsys.readouterr().err
    hf.existing[SPACE] += ["modeling/detector.py"]
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--space_id", SPACE]) == 0


@pytest.mark.parametrize("fail_on", [("create_commit", REPO), ("create_commit", SPACE)])
def test_upload_failure_is_clear_and_leaves_the_folder_byte_identical(model_dir, hf, capsys, fail_on):
    hf.fail_on = fail_on
    before = checksums(model_dir)
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--space_id", SPACE, "--token", "hf_arg"]) == 1
    err = capsys.readouterr().err
    assert f"Failed while uploading the {'model' if fail_on[1] == REPO else 'space'} repo {fail_on[1]}" in err
    assert "Connection reset by peer" in err and "was not changed" in err and "re-run" in err
    if fail_on[1] == REPO:
        assert "Nothing was published" in err and ("create_repo", SPACE) not in _names(hf.calls)
    else:
        assert f"model already published: https://huggingface.co/{REPO}/commit/abc" in err
    assert ("init", "hf_arg") in hf.calls  # --token wins over the stored login
    assert checksums(model_dir) == before


def test_unreachable_hub_with_the_real_client(model_dir, monkeypatch, capsys):
    """The real huggingface_hub client against a closed local port: a genuine connection failure."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens once the socket is closed
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    before = checksums(model_dir)
    assert main(["--model_dir", str(model_dir), "--repo_id", REPO, "--token", "hf_x"]) == 1
    err = capsys.readouterr().err
    assert "Failed while checking your token" in err and "Nothing was published" in err
    assert checksums(model_dir) == before


def test_offline_mode_and_bad_folders_are_refused(tmp_path, model_dir, hf, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PushError, match="HF_HUB_OFFLINE"):
        push(model_dir, REPO)
    with pytest.raises(PushError, match="no config.json"):
        push(tmp_path, REPO, dry_run=tmp_path / "dry")
    assert hf.calls == []
