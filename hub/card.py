"""The model card (README.md with YAML metadata) of a detector folder, written from the files the pipeline produced:
config.json (architecture, labels, base weights and their license, calibration), training_config.json (the recipe)
and the evaluation harness's results.json (every number in the results). Nothing numeric is typed here; a missing
input makes its section say so instead of being filled in.

    from hub.card import build_model_card
    card = build_model_card("runs/atto", repo_id="me/ai-image-detector")  # a huggingface_hub.ModelCard
    print(card)  # README.md text; the push uploads it from memory and never writes into the model folder

Where the results come from: each `results.json` is one evaluation set (the harness's --output_dir). By default the
card takes every one the folder holds (modeling.formats.list_results: `<model_dir>/results.json`,
`<model_dir>/*/results.json` such as `--output_dir runs/atto/eval_ood`, and `eval/*/results.json`); pass paths to
choose. In the model repo each set's results and plots go under `eval/<set name>/` (EvalSet.repo_dir).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from modeling.families import family_of
from modeling.formats import (
    METRIC_NAMES,
    RESULTS_FILE,
    EvaluationResults,
    TrainingRecord,
    calibration_from,
    class_counts,
    false_positive_rate,
    format_cell,
    list_results,
    markdown_table,
    read_results,
    read_training_record,
    scoring_from,
)

TEMPLATE = Path(__file__).parent / "templates" / "model_card.md"
PROJECT_LICENSE = "apache-2.0"  # pyproject.toml: the code's license, which applies when no base weights were used
TAGS = ["timm", "image-classification", "ai-image-detection", "deepfake-detection"]
TASK = {"task_type": "image-classification", "task_name": "AI-generated image detection"}
# The subset of results.json's metrics (modeling.formats.METRIC_NAMES, the model-index names) that are metric ids
# on the Hub (the `metrics:` field should hold those).
HUB_METRIC_IDS = ("accuracy", "precision", "recall", "f1", "roc_auc")
PLOTS = {"roc.png": "ROC", "scores.png": "score histograms", "reliability.png": "reliability diagram"}
# Settings of training_config.json (modeling.formats.TrainingRecord.settings) shown in the recipe, in this order; the
# rest is in the linked file.
RECIPE = {
    "phase": "Phase", "model_name_or_path": "Architecture / initial model", "init_from": "Initialised from",
    "pretrained": "Pretrained backbone", "image_size": "Image size (px)", "optim": "Optimizer",
    "learning_rate": "Learning rate (head)", "layer_decay": "Layer-wise LR decay (per block)",
    "weight_decay": "Weight decay (none on biases and norms)", "lr_scheduler_type": "LR schedule",
    "warmup_steps": "Warmup (fraction of the steps if < 1, else steps)", "warmup_ratio": "Warmup (fraction of steps)",
    "warmup_start_factor": "Warmup starts at (x LR)", "eta_min": "Final learning rate (eta_min)",
    "label_smoothing_factor": "Label smoothing", "drop_path_rate": "Stochastic depth (drop path)",
    "epochs": "Epochs", "num_train_epochs": "Epochs", "max_steps": "Max steps",
    "per_device_train_batch_size": "Batch size per device", "total_train_batch_size": "Total batch size",
    "gradient_accumulation_steps": "Gradient accumulation steps", "max_grad_norm": "Gradient clipping (max norm)",
    "mixed_precision": "Mixed precision", "train_profile": "Default augmentation profile",
    "rehearsal_ratio": "Rehearsal ratio (replayed : new)", "seed": "Seed",
}
# Data sources: the record's data (with counts) by role, else the raw source lists of the arguments.
DATA_ROLES = {"train": "training", "rehearsal": "rehearsal (replayed)", "validation": "validation", "test": "test"}
SOURCE_LISTS = {"train_sources": "training", "rehearsal_sources": "rehearsal (replayed)",
                "validation_sources": "validation", "test_sources": "test"}
SOURCE_COLUMNS = ("source", "path", "hub", "config", "split", "generator", "label", "profile", "max_samples", "n",
                  "n_real", "n_fake", "sources")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class EvalSet:
    """One results.json of the evaluation harness."""
    name: str
    path: Path
    results: EvaluationResults

    @property
    def repo_dir(self) -> str:
        return f"eval/{self.name}"

    @property
    def files(self) -> list[Path]:
        """The harness's outputs next to results.json, uploaded with the card."""
        names = [RESULTS_FILE, "results.md", *PLOTS]
        return [self.path.parent / n for n in names if (self.path.parent / n).is_file()]


NOTES_FILE = "model_notes.md"  # optional free text from the trainer, shown near the top of the card

def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_eval_sets(model_dir: str | Path, results_path=None) -> list[EvalSet]:
    """results_path: None (every set the folder holds, modeling.formats.list_results), one path or a list of paths
    to results.json files."""
    if results_path is None:
        paths = list_results(model_dir)
    else:
        paths = [Path(p) for p in ([results_path] if isinstance(results_path, (str, Path)) else results_path)]
    sets: list[EvalSet] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"results file not found: {path} (write it with `python -m train.evaluation`)")
        results = read_results(path)
        # Named after the evaluated folders, never their full paths: those are the publisher's local directories.
        name = "+".join(Path(d).name for d in results.get("data", {}).get("dirs", [])) or path.parent.name
        name = re.sub(r"[^\w.-]+", "-", name).strip("-.") or "eval"
        taken, unique, i = {s.name for s in sets}, name, 1
        while unique in taken:  # two evaluations of folders with the same name
            i += 1
            unique = f"{name}-{i}"
        sets.append(EvalSet(unique, path, results))
    return sets


def license_of(config: dict) -> tuple[str, str]:
    """(Hub license id, one sentence on why). A fine-tuned model inherits its base weights' license, which
    build_detector keeps in pretrained_cfg only when pretrained weights were loaded."""
    base, lic = config.get("base_model"), (config.get("pretrained_cfg") or {}).get("license")
    shown = f"`{base if hub_base_model(config) else Path(str(base)).name}`"
    if lic:
        return lic, (f"The model was fine-tuned from the pretrained weights {shown}, which are released under "
                     f"`{lic}`; a model trained from them inherits that license.")
    if base:
        return "unknown", (f"The model was fine-tuned from {shown}, whose license is not recorded in config.json: "
                           "check it before using or sharing this model.")
    return PROJECT_LICENSE, ("The model was trained from a random initialisation, with no pretrained weights, so only "
                             f"the project's own license (`{PROJECT_LICENSE}`) applies.")


def hub_base_model(config: dict) -> str | None:
    """config.base_model when it names a Hub repo (build_detector(pretrained=True)); a local weights file
    (pretrained='<path>') cannot be linked."""
    base = config.get("base_model")
    if base and _HUB_ID.match(base) and Path(base).suffix not in (".safetensors", ".pth", ".bin", ".pt"):
        return base
    return None


def eval_results(eval_sets: list[EvalSet]) -> list[EvalResult]:
    """One EvalResult per evaluation set and defined metric (undefined ones, None in results.json, are left out)."""
    out = []
    for s in eval_sets:
        for key, pretty in METRIC_NAMES.items():
            value = s.results["overall"].get(key)
            if value is not None:
                # dataset_config keeps the sets apart: the Hub groups results by (type, config, split).
                out.append(EvalResult(**TASK, dataset_type="imagefolder", dataset_name=s.name, dataset_config=s.name,
                                      metric_type=key, metric_name=pretty, metric_value=float(value)))
    return out


def card_data(config: dict, eval_sets: list[EvalSet], record: TrainingRecord | None, repo_id: str) -> ModelCardData:
    results = eval_results(eval_sets)
    return ModelCardData(
        library_name="transformers", pipeline_tag="image-classification", license=license_of(config)[0],
        base_model=hub_base_model(config), tags=list(TAGS), datasets=_hub_datasets(record) or None,
        metrics=[m for m in HUB_METRIC_IDS if any(r.metric_type == m for r in results)] or None,
        model_name=repo_id.split("/")[-1], eval_results=results or None,
    )


# --- Markdown pieces -------------------------------------------------------------------------------------------------

def _delta(value: float) -> str:
    return f"{round(value, 3) + 0.0:+.3f}"  # + 0.0 turns -0.0 into 0.0: no "-0.000"


def overall_table(eval_sets: list[EvalSet]) -> str:
    header = ["set", "real", "fake", "accuracy", "balanced acc.", "precision", "recall", "F1", "FPR on reals",
              "ROC AUC", "AP", "TPR@1%FPR", "TPR@5%FPR", "ECE"]
    rows = []
    for s in eval_sets:
        m = s.results["overall"]
        rows.append([f"`{s.name}`", *class_counts(m), m["accuracy"], m["balanced_accuracy"], m["precision"],
                     m["recall"], m["f1"], false_positive_rate(m), m["roc_auc"], m["average_precision"],
                     m["tpr_at_1pct_fpr"], m["tpr_at_5pct_fpr"], m["ece"]])
    return markdown_table(header, rows)


def source_table(results: dict) -> str:
    rows = [[f"`{name}`", *class_counts(m), m["accuracy"], false_positive_rate(m), m["recall"], m["roc_auc"]]
            for name, m in results.get("by_source", {}).items()]
    if not rows:
        return "Not reported."
    return markdown_table(["source", "real", "fake", "accuracy", "FPR (reals called fake)", "recall (fakes caught)",
                   "ROC AUC"], rows)


def generator_table(results: dict, group: str = "generator") -> str:
    """Per generator (or per family) against all reals; marks what the model saw in training when known."""
    vs_real = results.get(f"by_{group}_vs_real") or {}
    seen = results.get("seen_in_training")
    if seen is not None and group == "family":  # a family was in training or was not: its generators agree on it
        seen = {family_of(g): "never seen" if v == "never seen" else "family seen" for g, v in seen.items()}
    rows = []
    for name, m in results.get(f"by_{group}", {}).items():
        if class_counts(m)[1] == 0:  # the reals' group ("none")
            continue
        against = vs_real.get(name, {})
        row = [f"`{name}`", class_counts(m)[1], m["recall"], against.get("roc_auc"), against.get("tpr_at_5pct_fpr")]
        rows.append(row + ([seen.get(name, "—").replace("generator seen", "seen")] if seen is not None else []))
    if not rows:
        return f"Not reported (no fakes with a {group} name in this set)."
    return markdown_table([group, "fakes", "detection rate", "ROC AUC vs reals", "TPR@5%FPR vs reals"]
                  + (["in training"] if seen is not None else []), rows)


def robustness_table(results: dict) -> str:
    sweep = results.get("robustness")
    if not sweep:
        return ("Not evaluated for this set (`python -m train.evaluation ... --robustness` measures it).")
    clean = results["overall"]

    def delta(m):
        return None if m["roc_auc"] is None or clean["roc_auc"] is None else _delta(m["roc_auc"] - clean["roc_auc"])

    rows = [["none (as evaluated above)", clean["roc_auc"], "", clean["balanced_accuracy"], clean["recall"],
             false_positive_rate(clean), clean["tpr_at_5pct_fpr"]]]
    rows += [[f"`{name}`", m["roc_auc"], delta(m), m["balanced_accuracy"], m["recall"], false_positive_rate(m),
              m["tpr_at_5pct_fpr"]] for name, m in sweep.items()]
    return markdown_table(["perturbation", "ROC AUC", "Δ AUC", "balanced acc.", "recall", "FPR on reals",
                           "TPR@5%FPR"], rows)


def stale_notes(results: dict, calibration: dict) -> str:
    """Warn when the set was measured with another threshold or temperature than the model now carries."""
    measured = results.get("model", {})
    notes = []
    for key, what in (("threshold", "accuracy, precision, recall, F1 and FPR"), ("temperature", "ECE")):
        if key in measured and abs(float(measured[key]) - float(calibration[key])) > 1e-9:
            notes.append(f"Measured with {key} {format_cell(float(measured[key]), 4)}, but this model now stores "
                         f"{format_cell(float(calibration[key]), 4)}: the {what} here do not describe its current "
                         "decisions. Re-run the evaluation.")
    return "\n".join(f"> **Note.** {n}" for n in notes)


def set_description(s: EvalSet) -> str:
    data, m = s.results.get("data", {}), s.results["overall"]
    n_real, n_fake = class_counts(m)
    parts = [f"{m['n']} images ({n_real} real, {n_fake} fake)"]
    if data.get("sources"):
        parts.append("sources: " + ", ".join(f"`{k}` {v}" for k, v in data["sources"].items()))
    measured = s.results.get("model", {})
    if "threshold" in measured:
        parts.append(f"decision threshold {format_cell(float(measured['threshold']), 4)}")
    return "; ".join(parts) + f". Raw numbers: [`{s.repo_dir}/results.json`]({s.repo_dir}/results.json)."


def plot_links(s: EvalSet) -> str:
    return " ".join(f"![{title}]({s.repo_dir}/{name})" for name, title in PLOTS.items()
                    if (s.path.parent / name).is_file())


def headline(eval_sets: list[EvalSet]) -> str:
    if not eval_sets:
        return ("> **Not evaluated.** No evaluation results (`results.json` from `python -m train.evaluation`) were "
                "published with this model, so nothing on this page measures how well it works.")
    lines = []
    for s in eval_sets:
        m = s.results["overall"]
        n_real, n_fake = class_counts(m)
        threshold = s.results.get("model", {}).get("threshold")
        lines.append(f"- `{s.name}` ({n_real} real, {n_fake} fake images): ROC AUC {format_cell(m['roc_auc'])}; catches "
                     f"{format_cell(m['tpr_at_5pct_fpr'])} of the fakes when 5% of the reals are flagged; at its threshold "
                     f"{format_cell(threshold, 4)}: balanced accuracy {format_cell(m['balanced_accuracy'])}, "
                     f"{format_cell(false_positive_rate(m))} of the real images called fake.")
        unseen = s.results.get("never_seen_vs_real")
        if unseen:
            lines.append(f"  - **Generators never seen in training** ({', '.join(unseen['generators'])}; "
                         f"{class_counts(unseen)[1]} fakes, against all {n_real} reals): ROC AUC "
                         f"{format_cell(unseen['roc_auc'])}, catches {format_cell(unseen['recall'])} of them at the threshold.")
    return "Measured by the evaluation harness (details under Results):\n\n" + "\n".join(lines)


def calibration_text(calibration: dict, eval_sets: list[EvalSet]) -> tuple[str, str]:
    """(one sentence for the top of the card, the Calibration section)."""
    fitted = next((s.results["calibration"] for s in eval_sets if s.results.get("calibration")), None)
    if "fitted_on" not in calibration and fitted is None:
        summary = ("The model is not calibrated: its probabilities are the raw softmax and the threshold is the "
                   "default.")
        return summary, summary + (" (`python -m train.evaluation --calibrate --calibration_dir <val>` fits "
                                   "both.)")
    target = calibration.get("target_fpr")
    summary = (f"Probabilities are temperature-scaled (T = {format_cell(float(calibration['temperature']))}) and the "
               f"threshold was chosen on held-out data"
               + (f" to flag at most {target:.0%} of its real images." if target is not None else "."))
    lines = [
        f"- Temperature: {format_cell(float(calibration['temperature']), 4)} (folded into the classifier weights).",
        f"- Decision threshold: {format_cell(float(calibration['threshold']), 4)} (fake when p(fake) ≥ threshold)"
        + (f", chosen for a false-positive rate of at most {target:.0%}" if target is not None else "") + ".",
    ]
    if calibration.get("fitted_on"):
        lines.append(f"- Fitted on: `{Path(str(calibration['fitted_on'])).name}` (never on an evaluation set).")
    if fitted:
        c = fitted.get("calibration_set", {})
        if c:
            lines.append(f"- On that set ({c.get('n_real')} real, {c.get('n_fake')} fake): FPR {format_cell(c.get('fpr'))}, "
                         f"TPR {format_cell(c.get('tpr'))}; NLL {format_cell(c.get('nll_before'))} → {format_cell(c.get('nll_after'))}, "
                         f"ECE {format_cell(c.get('ece_before'))} → {format_cell(c.get('ece_after'))}.")
        lines.append(f"- ECE on the evaluation set it was reported with: {format_cell(fitted.get('ece_before'))} before, "
                     f"{format_cell(fitted.get('ece_after'))} after.")
    else:
        lines.append("- The fit's own measurements were not published with this model.")
    return summary, "\n".join(lines)


def data_limitations(eval_sets: list[EvalSet]) -> list[str]:
    """Where the measurements show the model at its weakest."""
    lines = []
    for s in eval_sets:
        gens = {g: m["recall"] for g, m in s.results.get("by_generator", {}).items()
                if class_counts(m)[1] and m["recall"] is not None}
        if len(gens) > 1:
            g = min(gens, key=gens.get)
            lines.append(f"Weakest generator in `{s.name}`: `{g}`, detection rate {format_cell(gens[g])}.")
        clean_auc = s.results["overall"]["roc_auc"]
        drops = {p: m["roc_auc"] - clean_auc for p, m in (s.results.get("robustness") or {}).items()
                 if m["roc_auc"] is not None and clean_auc is not None}
        if drops:
            p = min(drops, key=drops.get)
            lines.append(f"Largest robustness loss in `{s.name}`: `{p}`, ROC AUC change {_delta(drops[p])}."
                         if round(drops[p], 3) < 0 else
                         f"No perturbation of the sweep lowered ROC AUC in `{s.name}` (at 3 decimals).")
    return lines


def validation_table(eval_results_json: dict | None) -> str:
    """The Trainer's eval_results.json: `eval_<metric>` overall and `eval_<source>/<metric>` per source."""
    if not eval_results_json:
        return ""
    groups: dict[str, dict] = {}
    for key, value in eval_results_json.items():
        group, _, metric = key.removeprefix("eval_").rpartition("/")
        groups.setdefault(group or "all", {})[metric] = value
    columns = [c for c in ("n", *METRIC_NAMES, "loss") if any(c in g for g in groups.values())]
    rows = [[f"`{name}`" if name != "all" else "all", *(g.get(c) for c in columns)] for name, g in groups.items()]
    rows.sort(key=lambda row: row[0] != "all")
    return ("The Trainer's last evaluation on the validation sources (`eval_results.json`). These are the data used to "
            "choose the checkpoint, from the same sources as the training data, so they are in-distribution and "
            "optimistic; threshold-dependent numbers use the threshold the model had during training, before any "
            "calibration.\n\n" + markdown_table(["validation", *(METRIC_NAMES.get(c, c) for c in columns)], rows))


def _source_groups(record: TrainingRecord) -> list[tuple[str, list[dict]]]:
    if record.data:
        groups = [(role, record.data.get(key)) for key, role in DATA_ROLES.items()]
    else:
        flat = record.settings()
        groups = [(role, flat.get(key)) for key, role in SOURCE_LISTS.items()]
    return [(role, [s if isinstance(s, dict) else {"path": s} for s in sources])
            for role, sources in groups if sources]


def _cell(value):
    if isinstance(value, str) and Path(value).is_absolute():
        return Path(value).name  # the publisher's local directories are not the reader's business
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else json.dumps(value)


def sources_table(record: TrainingRecord) -> str:
    groups = _source_groups(record)
    rows = [{"role": role, **source} for role, sources in groups for source in sources]
    for row in rows:
        if row["role"] in ("validation", "test"):
            row.pop("profile", None)  # evaluation data gets the eval transform, whatever default the record carries
    if not rows:
        return "The data sources are not recorded in training_config.json."
    columns = ["role"] + [c for c in SOURCE_COLUMNS if any(row.get(c) is not None for row in rows)]
    table = markdown_table(columns, [[_cell(row.get(c)) for c in columns] for row in rows])
    counted = [row["n"] for row in rows if row["role"] == "training" and isinstance(row.get("n"), int)]
    return table + (f"\n\nTraining images (before any replay): {sum(counted)}." if counted else "")


def _hub_datasets(record: TrainingRecord | None) -> list[str]:
    """Hub dataset ids among the training sources (local folders have none)."""
    ids = []
    for role, sources in _source_groups(record or TrainingRecord()):
        for source in sources:
            name = source.get("hub")
            if role != "test" and isinstance(name, str) and _HUB_ID.match(name) and name not in ids:
                ids.append(name)
    return ids


def recipe_text(record: TrainingRecord | None) -> str:
    if record is None:
        return ("Not recorded: no `training_config.json` was published with this model, so how it was trained is "
                "unknown.")
    flat = record.settings()
    rows, shown = [], set()
    for key, label in RECIPE.items():
        if flat.get(key) is not None and label not in shown and not (key == "max_steps" and flat[key] <= 0):
            rows.append([label, str(_cell(flat[key]))])  # as recorded: 0.0002 must not print as 0.000
            shown.add(label)
    parts = [markdown_table(["setting", "value"], rows) if rows
             else "No recognised settings in `training_config.json`."]
    profiles = record.augmentation_profiles
    if profiles:
        parts.append("Augmentation profiles:\n\n" + "\n".join(
            f"- `{name}`: " + (", ".join(f"{k} {_cell(v)}" for k, v in p.items()) if isinstance(p, dict) else str(p))
            for name, p in profiles.items()))
    parts.append("Data sources:\n\n" + sources_table(record))
    parts.append("Every argument of the run: [`training_config.json`](training_config.json).")
    return "\n\n".join(parts)


NATIVE_VIEW = """
**This model is scored in its native view**, and its threshold, verdict band and every number under Results were
measured in it: {crops} crops of {size}x{size} pixels spread evenly from corner to corner over the *unresized*
image, their logits averaged (`config.json`'s `scoring`). The three snippets above give the single resized view
instead (the image shrunk to {image_size} px), which scores differently. To score as the evaluation and the demo
app do:

```python
import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForImageClassification

model = AutoModelForImageClassification.from_pretrained("{repo_id}").eval()
size, grid = model.config.scoring["native_crop_size"], model.config.scoring["native_grid"]
image = Image.open("photo.jpg").convert("RGB")
if min(image.size) < size:  # only an image smaller than one crop is enlarged
    scale = size / min(image.size)
    image = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                         Image.BICUBIC)
tops, lefts = (np.linspace(0, n - size, grid).round().astype(int) for n in (image.height, image.width))
crops = np.stack([np.asarray(image.crop((x, y, x + size, y + size))) for y in tops for x in lefts])
mean, std = (torch.tensor(model.config.pretrained_cfg[k]).view(3, 1, 1) for k in ("mean", "std"))
pixels = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255 - mean) / std
with torch.no_grad():
    probs = model(pixel_values=pixels).logits.mean(0).softmax(-1)
p_fake = probs[model.config.label2id["fake"]].item()
print("fake" if p_fake >= model.config.calibration["threshold"] else "real", p_fake)
```
"""


def native_view_text(config: dict, repo_id: str) -> str:
    """The native view's paragraph and snippet for a model with config.scoring, else nothing."""
    scoring = scoring_from(config.get("scoring"))
    if not scoring:
        return ""
    return NATIVE_VIEW.format(crops=scoring["native_grid"] ** 2, size=scoring["native_crop_size"], repo_id=repo_id,
                              image_size=config["pretrained_cfg"]["input_size"][-1])


def build_model_card(model_dir: str | Path, results_path=None, repo_id: str | None = None) -> ModelCard:
    """The model card of a detector folder, as a huggingface_hub.ModelCard. Reads model_dir, writes nothing.

    results_path: None (every results.json the folder holds, see load_eval_sets), a path or a list of paths.
    repo_id: the Hub repo the card's snippets load; defaults to the folder's name.
    """
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    if config is None:
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved detector (see modeling.save_detector)")
    repo_id = repo_id or model_dir.resolve().name
    eval_sets = load_eval_sets(model_dir, results_path)
    for s in eval_sets:
        evaluated = s.results.get("model", {}).get("architecture")
        if evaluated and evaluated != config.get("architecture"):
            raise ValueError(f"{s.path} evaluates a {evaluated}, but {model_dir} holds a {config.get('architecture')}:"
                             " these results belong to another model.")
    record = read_training_record(model_dir)
    # What only the trainer knows (purpose, caveats, experiments that led here): model_notes.md, kept as written
    notes_file = model_dir / NOTES_FILE
    notes = notes_file.read_text().strip() if notes_file.is_file() else ""
    calibration = calibration_from(config.get("calibration"))
    license_id, license_reason = license_of(config)
    summary, calibration_section = calibration_text(calibration, eval_sets)
    labels = config.get("label_names") or list((config.get("id2label") or {}).values())
    return ModelCard.from_template(
        card_data(config, eval_sets, record, repo_id), template_path=str(TEMPLATE),
        title=repo_id.split("/")[-1], repo_id=repo_id, architecture=config.get("architecture"),
        image_size=(config.get("pretrained_cfg") or {}).get("input_size", [None])[-1],
        headline=headline(eval_sets),
        license=license_id, license_reason=license_reason, noncommercial="-nc" in license_id,
        labels=", ".join(f"`{name}`" for name in labels), threshold=format_cell(float(calibration["threshold"]), 4),
        calibration_summary=summary, calibration=calibration_section,
        results_intro=(overall_table(eval_sets) + "\n\nPositive class: fake. FPR on reals: the share of real images "
                       "called fake at the threshold. TPR@x%FPR: the share of fakes caught when at most x% of reals "
                       "are flagged. ECE: 15 bins of p(fake). — marks a metric undefined for that group.")
        if eval_sets else "Not evaluated: no results.json was published with this model.",
        eval_sets=[dict(name=s.name, description=set_description(s), notes=stale_notes(s.results, calibration),
                        by_source=source_table(s.results), by_generator=generator_table(s.results),
                        by_family=generator_table(s.results, "family"),
                        robustness=robustness_table(s.results), plots=plot_links(s)) for s in eval_sets],
        validation=validation_table(_read_json(model_dir / "eval_results.json")),
        recipe=recipe_text(record), data_limitations=data_limitations(eval_sets), notes=notes,
        native_view=native_view_text(config, repo_id),
    )
