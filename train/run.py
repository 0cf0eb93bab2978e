"""Train (or continue training) the real/fake detector.

    python train/run.py [config.yaml|config.json] [--flag value ...]

Arguments are three dataclasses parsed by HfArgumentParser: ModelArguments, DataArguments below and
DetectorTrainingArguments (every transformers TrainingArguments flag, with the seed recipe's defaults). A config
file holds the same keys; flags given after it override it. Folders go on the command line (--train_dirs,
--validation_dirs, --rehearsal_sources); Hub datasets and per-source settings (augmentation profile, cap,
label mapping, streaming) go in a config file as source dicts (see SourceSpec in train/data/sources.py and
train/configs/).

One script serves both phases: phase 1 builds the model from a timm architecture; the continual phase starts
from a trained detector (--init_from) and replays old sources (--rehearsal_sources, --rehearsal_ratio).
main() reads as the run's steps: arguments, model, data, trainer, the record of the run, train, evaluate, push.
Distributed: `torchrun --nproc_per_node=N train/run.py ...` or `accelerate launch train/run.py ...`.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import transformers
import yaml
from transformers import HfArgumentParser
from transformers.trainer_utils import IntervalStrategy

from modeling import build_detector, constrain_input_filter, get_calibration, load_detector, save_detector
from modeling.detector import EVAL_RESIZE_RATIO, data_config, eval_size_cfg, fake_index
from modeling.formats import TrainingRecord, write_training_record
from train.data import IGNORE_INDEX, DataLimits, EvalData, SourceSpec, build_eval_data, build_training_data, collate
from train.distill import Teacher
from train.evaluation.metrics import fake_probs_from_logits, load_detection_metric
from train.evaluation.predict import resolve_scoring, scoring_transform
from train.trainer import DetectorTrainer, DetectorTrainingArguments
from train.transforms import build_train_transform, get_profile

logger = logging.getLogger("train.run")
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="convnextv2_base", metadata={
        "help": "timm architecture of a new detector (phase 1), or a saved detector folder / Hub repo"})
    pretrained: str = field(default="true", metadata={
        "help": "Backbone weights of a new detector: true (timm's Hub weights), false (random), or a path"})
    image_size: int | None = field(default=None, metadata={
        "help": "Training crop; evaluation resizes to size*288/256 and centre-crops size. Default: 256 for a new "
                "detector, the saved model's size otherwise"})
    drop_path_rate: float | None = field(default=None, metadata={"help": "Stochastic depth of a new detector"})
    input_filter: str | None = field(default=None, metadata={
        "help": "npr: a stem blind to content (modeling.constrain_input_filter); npr_half: half its channels blind, "
                "half free; none: off. Also changes a model given by --init_from "
                "(overrides a config file's npr)"})
    eval_resize_ratio: float = field(default=EVAL_RESIZE_RATIO, metadata={
        "help": "Evaluation resizes the short side to image_size * this, then centre-crops (seed: 288/256)"})
    init_from: str | None = field(default=None, metadata={
        "help": "Continual phase: start from this trained detector (folder or Hub repo) instead of a new one"})
    native_crop_size: int | None = field(default=None, metadata={
        "help": "Validate (and serve) the native view: a grid of crops of this size over the unresized image, logits "
                "averaged (modeling/views.py); stored in config.scoring, so checkpoints, the evaluation harness and "
                "the app score that view. 0: the resized view. Default: the view of --init_from's model, else resized"})
    native_grid: int | None = field(default=None, metadata={
        "help": "With --native_crop_size: grid x grid crops per image (default 4)"})


@dataclass
class DataArguments:
    train_dirs: list[str] = field(default_factory=list, metadata={"help": "Training image folders"})
    validation_dirs: list[str] = field(default_factory=list, metadata={"help": "Validation image folders"})
    test_dirs: list[str] = field(default_factory=list, metadata={"help": "Test image folders (scored at the end)"})
    train_sources: list[str] = field(default_factory=list, metadata={
        "help": "Training sources: folders, or (in a config file) dicts with path/hub, profile, max_samples, ..."})
    validation_sources: list[str] = field(default_factory=list, metadata={"help": "Like train_sources"})
    test_sources: list[str] = field(default_factory=list, metadata={"help": "Like train_sources"})
    rehearsal_sources: list[str] = field(default_factory=list, metadata={
        "help": "Continual phase: the old sources to replay (folders, or dicts in a config file)"})
    rehearsal_ratio: float = field(default=8.0, metadata={
        "help": "Replayed old images per new image each epoch (the seed's new:replay = 1:8)"})
    train_profile: str = field(default="train", metadata={
        "help": "Augmentation profile of sources that name none: train, light, continual, wild or native, or JSON "
                """overriding one: '{"base": "native", "crop_size": 96}'"""})
    max_samples_per_source: int | None = field(default=None, metadata={
        "help": "Cap on the samples of each training source that sets none"})
    max_eval_samples_per_source: int | None = field(default=None, metadata={
        "help": "Cap on the samples of each validation/test source that sets none"})
    source_balance: float = field(default=0.0, metadata={
        "help": "Flatten the training sources within each class: a source of n rows gets a share of n**(1-x) "
                "(0: as the data comes; 0.5: square root; 1: all sources alike). Rows are drawn with replacement."})
    max_image_pixels: int = field(default=64_000_000, metadata={
        "help": "Images with more pixels are skipped as bad files (decompression bombs)"})


def parse_args(argv: list[str] | None = None):
    """(ModelArguments, DataArguments, DetectorTrainingArguments) from an optional config file + flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, DetectorTrainingArguments))
    if argv and argv[0].endswith(CONFIG_SUFFIXES):
        text = Path(argv.pop(0)).read_text()
        config = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
        known = {action.dest for action in parser._actions}
        if unknown := sorted(set(config) - known):
            raise ValueError(f"unknown keys in the config file: {unknown}")
        for action in parser._actions:  # values from the file satisfy required flags; flags still override
            if action.dest in config:
                action.required = False
        # argparse uses defaults as given (a list of dicts stays one); string defaults go through the flag's type
        parser.set_defaults(**config)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


def _bool_or_path(value) -> bool | str:
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    return {"true": True, "false": False, "yes": True, "no": False}.get(text.lower(), text)


def source_specs(dirs: list[str], sources: list, **defaults) -> list[SourceSpec]:
    return [SourceSpec.parse(s, **defaults) for s in [*dirs, *sources]]


def build_model(model_args: ModelArguments):
    """A new detector from a timm architecture, or a saved one (continual phase), in the view it is to be served in."""
    model = _new_or_saved_model(model_args)
    if model_args.native_crop_size is not None:
        model.config.scoring = resolve_scoring(model, model_args.native_crop_size, model_args.native_grid)
    return model


def _new_or_saved_model(model_args: ModelArguments):
    start = model_args.init_from or model_args.model_name_or_path
    if model_args.init_from or Path(start, "config.json").is_file():
        model = load_detector(start)
        if model_args.input_filter is not None:  # e.g. npr -> npr_half: free half the stem to read content too
            model.config.input_filter = None if model_args.input_filter == "none" else model_args.input_filter
            constrain_input_filter(model)
        if model_args.image_size and model_args.image_size != model.config.pretrained_cfg["input_size"][-1]:
            size = model_args.image_size  # ConvNeXt takes any size: only the recorded preprocessing changes
            model.config.pretrained_cfg.update(eval_size_cfg(size, model_args.eval_resize_ratio))
        return model
    kwargs = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    return build_detector(start, pretrained=_bool_or_path(model_args.pretrained),
                          image_size=model_args.image_size or 256,
                          input_filter=None if model_args.input_filter in (None, "none") else model_args.input_filter,
                          eval_resize_ratio=model_args.eval_resize_ratio, **kwargs)


def make_compute_metrics(source_names: list[str], fake_idx: int, threshold: float):
    """Trainer hook: overall and per-source detection metrics through the project's `evaluate` module.
    Keys are flat scalars (what TensorBoard takes): accuracy, ..., tn/fp/fn/tp, and '<source>/<metric>'."""
    metric = load_detection_metric(keep_in_memory=True)  # in memory: no cache files shared between DDP ranks

    def scalars(result: dict, prefix: str = "") -> dict:
        (tn, fp), (fn, tp) = result.pop("confusion_matrix")
        result.update(tn=tn, fp=fp, fn=fn, tp=tp)
        return {f"{prefix}{k}": v for k, v in result.items() if v is not None}

    def compute_metrics(prediction) -> dict:
        labels, source_ids = (np.asarray(a) for a in prediction.label_ids)
        valid = labels != IGNORE_INDEX
        probs = fake_probs_from_logits(prediction.predictions, fake_idx)
        out = scalars(metric.compute(predictions=probs[valid], references=labels[valid], threshold=threshold))
        for sid in np.unique(source_ids[valid]):
            group = valid & (source_ids == sid)
            out.update(scalars(metric.compute(predictions=probs[group], references=labels[group],
                                              threshold=threshold), prefix=f"{source_names[sid]}/"))
        out["skipped_images"] = int((~valid).sum())
        return out

    return compute_metrics


def push(trainer: DetectorTrainer, output_dir: str) -> None:
    """Upload the saved detector through the project's hub.push (model card from the evaluation results)."""
    training_args = trainer.args
    from hub.push import push as hub_push

    repo_id = training_args.hub_model_id or Path(output_dir).name
    hub_push(output_dir, repo_id, private=bool(training_args.hub_private_repo), token=training_args.hub_token,
             commit_message="Upload detector trained with train/run.py")


def setup_logging(training_args: DetectorTrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO,
                        handlers=[logging.StreamHandler(sys.stdout)])
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def check_precision(model, training_args: DetectorTrainingArguments) -> None:
    if getattr(model.config, "input_filter", None) and training_args.mixed_precision != "no":
        # Measured: with bf16 autocast an npr model's loss stayed at 0.69 for 1000 steps. The zero-sum stem keeps
        # differences of one grey level (0.017 after normalisation), and bf16's spacing near 2 is 0.016.
        raise ValueError(f"input_filter={model.config.input_filter!r} needs fp32 (--mixed_precision no): "
                         f"{training_args.mixed_precision} autocast rounds away the pixel differences it reads.")
    logger.info("mixed precision: %s", training_args.mixed_precision)


def load_teacher(training_args: DetectorTrainingArguments, model) -> Teacher | None:
    if not training_args.teacher_model:
        return None
    teacher = Teacher.load(training_args.teacher_model, model.config, training_args.teacher_resize)
    return teacher.to(training_args.device)


@dataclass
class RunData:
    """What the Trainer takes: the training set and its epoch sampler, the validation and test sets (or None)."""
    train_set: object
    sampler: object
    summary: dict  # per source, for training_config.json
    validation: EvalData | None
    test: EvalData | None


def load_data(data_args: DataArguments, model, training_args: DetectorTrainingArguments) -> RunData:
    """Every source with its own augmentation profile and cap; the replay buffer for the continual phase."""
    limits = DataLimits(max_pixels=data_args.max_image_pixels)
    train_specs = source_specs(data_args.train_dirs, data_args.train_sources, profile=data_args.train_profile,
                               max_samples=data_args.max_samples_per_source)
    rehearsal_specs = source_specs([], data_args.rehearsal_sources, profile=data_args.train_profile,
                                   max_samples=data_args.max_samples_per_source)
    eval_defaults = dict(max_samples=data_args.max_eval_samples_per_source)
    validation_specs = source_specs(data_args.validation_dirs, data_args.validation_sources, **eval_defaults)
    test_specs = source_specs(data_args.test_dirs, data_args.test_sources, **eval_defaults)
    if not train_specs:
        raise ValueError("no training data: pass --train_dirs or train_sources in a config file")
    cfg = data_config(model)

    def make_transform(profile):
        return build_train_transform(profile, cfg["input_size"][-1], cfg["mean"], cfg["std"], cfg["interpolation"])

    with training_args.main_process_first(desc="loading data"):
        train_set, sampler, summary = build_training_data(
            train_specs, make_transform, training_args.seed, rehearsal_specs, data_args.rehearsal_ratio, limits,
            data_args.source_balance, training_args.process_index, training_args.world_size)
        # the view the model is served in (config.scoring), so the best checkpoint is the best as served
        scoring = scoring_transform(model, resolve_scoring(model))
        validation = build_eval_data(validation_specs, scoring, training_args.seed, limits)
        test = build_eval_data(test_specs, scoring, training_args.seed, limits)
    logger.info("training data: %s", json.dumps(summary, default=str))
    return RunData(train_set, sampler, summary, validation, test)


def build_trainer(model, training_args: DetectorTrainingArguments, data: RunData, teacher) -> DetectorTrainer:
    if data.validation is None and training_args.eval_strategy != "no":
        logger.info("no validation data: evaluation is off")
        training_args.eval_strategy = IntervalStrategy.NO
    return DetectorTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_set,
        eval_dataset=data.validation.samples if data.validation else None,
        data_collator=collate,
        compute_metrics=compute_metrics_for(data.validation, model) if data.validation else None,
        train_sampler=data.sampler,
        teacher=teacher,
    )


def compute_metrics_for(data: EvalData, model):
    """make_compute_metrics for an evaluation set, at the model's own threshold."""
    return make_compute_metrics(data.source_names, fake_index(model.config), get_calibration(model.config)["threshold"])


def record_of_run(model_args: ModelArguments, data_args: DataArguments, training_args: DetectorTrainingArguments,
                  model, data: RunData) -> TrainingRecord:
    """training_config.json (modeling.formats.TrainingRecord): every argument, the data actually loaded, the
    augmentation profiles' exact numbers."""
    return TrainingRecord(
        phase="continual" if (model_args.init_from or data_args.rehearsal_sources) else "initial",
        model_args=dataclasses.asdict(model_args),
        data_args=dataclasses.asdict(data_args),
        training_args=training_args.to_dict(),
        epochs=training_args.num_train_epochs,
        max_steps=training_args.max_steps,
        per_device_train_batch_size=training_args.per_device_train_batch_size,
        total_train_batch_size=training_args.per_device_train_batch_size * training_args.world_size
        * training_args.gradient_accumulation_steps,
        image_size=data_config(model)["input_size"][-1],
        data={**data.summary, "validation": data.validation.summary if data.validation else [],
              "test": data.test.summary if data.test else []},
        augmentation_profiles={key: dataclasses.asdict(get_profile(profile))
                               for key, profile in data.summary["profiles"].items()},
    )


def train(trainer: DetectorTrainer) -> None:
    """Train (resuming when asked), then save the detector (modeling.save_detector) into output_dir."""
    resume = trainer.args.resume_from_checkpoint  # a checkpoint folder, or true: the last one in output_dir
    train_result = trainer.train(resume_from_checkpoint=_bool_or_path(resume) if resume else None)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if trainer.is_world_process_zero():
        save_detector(trainer.model, trainer.args.output_dir)


def evaluate(trainer: DetectorTrainer, data: RunData) -> None:
    """The trained model on the validation sources (eval_results.json) and the test sources (test_results.json)."""
    if data.validation:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    if data.test:
        trainer.compute_metrics = compute_metrics_for(data.test, trainer.model)
        metrics = trainer.evaluate(data.test.samples, metric_key_prefix="test")
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)


def main(argv: list[str] | None = None) -> DetectorTrainer:
    model_args, data_args, training_args = parse_args(argv)
    setup_logging(training_args)
    transformers.set_seed(training_args.seed)
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False  # the Trainer would push every checkpoint; we push the final model once

    model = build_model(model_args)  # new (phase 1) or trained (continual phase); its config has the preprocessing
    check_precision(model, training_args)
    teacher = load_teacher(training_args, model)
    data = load_data(data_args, model, training_args)
    trainer = build_trainer(model, training_args, data, teacher)
    if trainer.is_world_process_zero():  # before training, so an interrupted run still says what it was
        Path(training_args.output_dir).mkdir(parents=True, exist_ok=True)
        write_training_record(training_args.output_dir,
                              record_of_run(model_args, data_args, training_args, model, data))
    train(trainer)
    evaluate(trainer, data)
    if push_to_hub and trainer.is_world_process_zero():
        push(trainer, training_args.output_dir)
    return trainer


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
