"""The training recipe as a `transformers.Trainer` subclass and its arguments.

What the subclass changes, and why:
- Optimizer: AdamW over timm's `param_groups_layer_decay` groups (no weight decay on biases and norms, an
  `lr_scale` per block). timm's groups only *carry* lr_scale; torch's and transformers' schedulers ignore it, so
  each group's own lr is set to base_lr * lr_scale here. torch's schedulers then scale every group's own initial
  lr, and the layer decay really happens (the seed's scripts trained every group at the head's LR).
- Scheduler: torch's LinearLR warmup from `warmup_start_factor` x lr, then CosineAnnealingLR down to `eta_min`
  (the same absolute floor for every group), chained by SequentialLR.
- Loss: the Trainer's label smoothing; placeholders of unreadable images (label -100) are ignored and counted.
  With a teacher (train.distill.Teacher), (1 - alpha) x that loss + alpha x T^2 x KL to the teacher's soft targets
  (Hinton et al.), on the training batches only: evaluation reports the student alone.
- Validation in the native view (config.scoring, modeling/views.py): each image's crops go through the model
  together and their logits are averaged, as the app scores it, so the best checkpoint is the best as served.
- Logs: the head's and the earliest group's LR, so the decay is visible in TensorBoard.
- A model with an input filter (config.input_filter, e.g. "npr") gets its stem constraint re-imposed after every
  optimizer step (modeling.constrain_input_filter).
- Checkpoints appear atomically: the Trainer writes checkpoint-N file by file in place, so a run killed mid-save
  leaves a checkpoint-N that `resume_from_checkpoint=True` picks (the highest number) and cannot load. Here it
  writes into a staging folder, and checkpoint-N appears in one rename once every process has finished.
- A streamed training set already split between ranks (train/data/build.py) gets a loader that only moves batches
  to the device: accelerate's default would have rank 0 read for all ranks, or cut every rank's share again.
Everything else (AMP and GradScaler, gradient accumulation and clipping, checkpoints with optimizer, scheduler,
scaler and RNG states, resume, DDP) is the Trainer's own.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate.data_loader import prepare_data_loader
from timm.optim import param_groups_layer_decay
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from modeling import constrain_input_filter
from train.data import IGNORE_INDEX
from train.distill import distillation_loss
from train.evaluation.predict import crop_averaged_logits

logger = logging.getLogger(__name__)
# The private methods of transformers' Trainer that DetectorTrainer overrides, because 5.23.0 has no public hook for
# what they do (see the class). tests/test_train_recipe.py checks each still exists with the same parameters, so an
# upgrade that renames one fails loudly instead of silently skipping the override.
PRIVATE_TRAINER_OVERRIDES = ("_get_train_sampler", "_get_output_dir", "_save_checkpoint")
# Where checkpoints are written before they appear; outside the Trainer's checkpoint-* pattern, so neither resume
# nor rotation ever sees a half-written one.
STAGING_DIR = "tmp-checkpoint"


def resolve_mixed_precision(requested: str, cuda: bool, capability: tuple[int, int] | None = None,
                            bf16_supported: bool = False) -> str:
    """"fp16", "bf16" or "no" for the hardware at hand.

    auto: fp16 (autocast + GradScaler) on CUDA GPUs of compute capability >= 7 (tensor cores), else fp32.
    fp16 asked where it cannot help (CPU, older GPUs) falls back to fp32 with a warning, never an error.
    bf16: on GPUs that support it; on CPU too (torch autocasts to bf16 on CPU); else fp16/fp32 as auto would.
    """
    if requested not in ("auto", "no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be auto, no, fp16 or bf16, not {requested!r}")
    fp16_ok = cuda and capability is not None and capability >= (7, 0)
    if requested == "no":
        return "no"
    if requested == "bf16":
        if not cuda or bf16_supported:
            return "bf16"
        warnings.warn("bf16 is not supported on this GPU; using " + ("fp16" if fp16_ok else "fp32"))
        return "fp16" if fp16_ok else "no"
    if requested == "fp16" and not fp16_ok:
        warnings.warn("fp16 needs a CUDA GPU of compute capability >= 7; training in fp32")
    return "fp16" if fp16_ok else "no"


@dataclass
class DetectorTrainingArguments(TrainingArguments):
    """TrainingArguments with the seed recipe's defaults and the recipe's own knobs."""

    layer_decay: float = field(default=0.8, metadata={
        "help": "LR multiplier per block from the head down (timm's groups); 1 disables layer-wise decay"})
    eta_min: float = field(default=0.0, metadata={"help": "Lowest LR the cosine reaches (each group)"})
    warmup_start_factor: float = field(default=0.01, metadata={"help": "Warmup starts at this fraction of the LR"})
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = field(default="auto", metadata={
        "help": "auto: fp16 + GradScaler on CUDA GPUs with compute capability >= 7, fp32 elsewhere. bf16: also "
                "on CPU. --fp16/--bf16 are read as this too, and never fail on hardware that lacks them."})
    teacher_model: str | None = field(default=None, metadata={
        "help": "Knowledge distillation: a saved detector (any architecture or input size) whose soft targets the "
                "model learns beside the labels"})
    distill_alpha: float = field(default=0.5, metadata={
        "help": "Weight of the teacher's soft targets; the labels' cross-entropy gets 1 - alpha"})
    distill_temperature: float = field(default=2.0, metadata={"help": "Softmax temperature of the soft targets"})
    teacher_resize: bool = field(default=False, metadata={
        "help": "Resize batches to the teacher's input size (for teachers that need a fixed size, e.g. ViTs); by "
                "default the teacher reads the student's pixels at their size"})
    # The seed recipe as defaults (TrainingArguments' own defaults in brackets).
    learning_rate: float = field(default=2e-4, metadata={"help": "Head LR (5e-5)"})
    weight_decay: float = field(default=0.02, metadata={"help": "AdamW weight decay, none on biases/norms (0)"})
    warmup_steps: float = field(default=0.05, metadata={
        "help": "Warmup length: a fraction of the training steps if < 1, else a number of steps (0)"})
    label_smoothing_factor: float = field(default=0.05, metadata={"help": "(0)"})
    lr_scheduler_type: str = field(default="cosine", metadata={
        "help": "cosine: the recipe's warmup-from-warmup_start_factor + cosine to eta_min. Any other "
                "transformers scheduler also keeps the layer decay (linear)"})
    num_train_epochs: float = field(default=8.0, metadata={"help": "(3)"})
    per_device_train_batch_size: int = field(default=30, metadata={"help": "(8)"})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "(8)"})
    eval_strategy: str = field(default="epoch", metadata={"help": "(no)"})
    save_strategy: str = field(default="epoch", metadata={"help": "(steps)"})
    save_total_limit: int | None = field(default=2, metadata={"help": "(None)"})
    logging_steps: float = field(default=20, metadata={"help": "(500)"})
    report_to: None | str | list[str] = field(default="tensorboard", metadata={"help": "(none)"})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Our collator builds the inputs (True)"})
    dataloader_num_workers: int = field(default=2, metadata={"help": "(0)"})
    dataloader_persistent_workers: bool = field(default=True, metadata={"help": "(False)"})

    def __post_init__(self):
        requested = "fp16" if self.fp16 else "bf16" if self.bf16 else self.mixed_precision
        cuda = torch.cuda.is_available() and not self.use_cpu
        chosen = resolve_mixed_precision(
            requested, cuda, torch.cuda.get_device_capability() if cuda else None,
            torch.cuda.is_bf16_supported() if cuda else False)
        self.mixed_precision = chosen
        self.fp16, self.bf16 = chosen == "fp16", chosen == "bf16"
        if self.bf16 and not cuda:
            self.use_cpu = True  # transformers wants it said explicitly for bf16 autocast on CPU
        if self.dataloader_num_workers == 0:
            self.dataloader_persistent_workers = False  # torch refuses persistent workers without workers
        if not cuda:
            self.dataloader_pin_memory = False  # pinning is for copies to a GPU; torch warns at every start without
        super().__post_init__()


def layer_decay_param_groups(model: torch.nn.Module, lr: float, weight_decay: float, layer_decay: float) -> list:
    """timm's layer-decay groups with each group's lr set to lr * lr_scale (lr_scale is kept for reference)."""
    groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return groups


def warmup_cosine_schedule(optimizer, warmup_steps: int, total_steps: int, start_factor: float = 0.01,
                           eta_min: float = 0.0):
    """Linear warmup from start_factor x each group's lr, then cosine from it down to eta_min. torch's schedulers
    scale each param group's own initial lr, so the layer decay's per-group rates survive. eta_min is one absolute
    floor for all groups: a group whose own lr is below it moves up to it (the closed form this replaced kept such a
    group at its lr)."""
    cosine = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup_steps), eta_min=eta_min)
    if warmup_steps <= 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_steps)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_steps])


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # a platform that cannot open or sync a directory (Windows)
        pass


def publish_checkpoint(staged: Path, final: Path) -> None:
    """Move a finished checkpoint folder into place with one rename (atomic on POSIX), after flushing its files,
    so that even a machine crash finds either the whole checkpoint or none."""
    for file in staged.rglob("*"):
        if file.is_file():
            _fsync(file)
    replaced = None
    if final.exists():  # the same step saved again, e.g. by a resumed run over a killed run's output_dir
        replaced = staged.with_name(staged.name + "-replaced")
        final.rename(replaced)
    os.replace(staged, final)
    _fsync(final.parent)
    if replaced is not None:
        shutil.rmtree(replaced)


class InputFilterProjection(TrainerCallback):
    """Projects the stem back onto the model's input-filter constraint after each optimizer step."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        constrain_input_filter(model)


class DetectorTrainer(Trainer):
    """The seed recipe on top of the Trainer (see the module docstring)."""

    def __init__(self, *args, train_sampler=None, teacher=None, **kwargs):
        """train_sampler: train.data.EpochSampler (replay, per-sample augmentation seeds); None: the Trainer's.
        teacher: a train.distill.Teacher for knowledge distillation; None: labels only."""
        self._staging = False  # True while _save_checkpoint writes (see there)
        self._recipe_scheduler = False  # True once create_scheduler built the recipe's warmup + cosine
        super().__init__(*args, **kwargs)
        self.train_sampler = train_sampler
        self.teacher = teacher
        # source_ids rides along with the labels so compute_metrics can report per source
        self.label_names = ["labels", "source_ids"]
        self.skipped_images = 0
        if getattr(self.model.config, "input_filter", None):
            self.add_callback(InputFilterProjection())

    # Private hooks of transformers 5.23.0's Trainer (PRIVATE_TRAINER_OVERRIDES), overridden because it has no public
    # one for these: _get_train_sampler is the only place to hand it a sampler (the public get_train_dataloader would
    # have to be rewritten whole, with the Trainer's private _get_dataloader); _get_output_dir and _save_checkpoint
    # are where a checkpoint's folder is chosen and written, which the atomic save needs (the public on_save callback
    # runs only after the files are written in place).
    def _get_train_sampler(self, train_dataset=None):
        return self.train_sampler if self.train_sampler is not None else super()._get_train_sampler(train_dataset)

    def get_train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset
        if not getattr(dataset, "split_by_rank", False) or self.args.world_size == 1:
            return super().get_train_dataloader()
        # Each rank streams its own share (train/data/build.py). accelerate's default for an iterable dataset
        # would have rank 0 read for every rank (dispatch_batches) or cut each share again; here batches are only
        # moved to the device.
        loader = DataLoader(dataset, batch_size=self._train_batch_size, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory,
                            persistent_workers=self.args.dataloader_persistent_workers,
                            prefetch_factor=self.args.dataloader_prefetch_factor)
        return prepare_data_loader(loader, self.args.device, num_processes=1, process_index=0, put_on_device=True,
                                   dispatch_batches=False)

    def _get_output_dir(self, trial) -> str:
        run_dir = super()._get_output_dir(trial)
        return os.path.join(run_dir, STAGING_DIR) if self._staging else run_dir

    def _save_checkpoint(self, model, trial):
        """The Trainer's save, pointed at run_dir/tmp-checkpoint (through _get_output_dir), then one rename."""
        run_dir = self._get_output_dir(trial)
        staging = Path(run_dir, STAGING_DIR)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.args.should_save:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left behind
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        best = self.state.best_model_checkpoint  # the Trainer named the staged folder if this step is the best
        if best and Path(best).parent == staging:
            self.state.best_model_checkpoint = os.path.join(run_dir, Path(best).name)
            if self.args.should_save:
                self.state.save_to_json(str(staging / name / TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every rank has written its files (rng_state_<rank>.pth)
        if self.args.should_save:
            publish_checkpoint(staging / name, Path(run_dir, name))
            shutil.rmtree(staging, ignore_errors=True)
            rotate_checkpoints(run_dir, self.args.save_total_limit, self.state.best_model_checkpoint, use_mtime=True)
        self.accelerator.wait_for_everyone()

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            net = self.accelerator.unwrap_model(model if model is not None else self.model)
            groups = layer_decay_param_groups(net.timm_model, self.args.learning_rate, self.args.weight_decay,
                                              self.args.layer_decay)
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, net)
            kwargs.pop("lr", None)
            self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **kwargs)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None and self.args.lr_scheduler_type == "cosine":
            self.lr_scheduler = warmup_cosine_schedule(
                optimizer or self.optimizer, self.args.get_warmup_steps(num_training_steps), num_training_steps,
                self.args.warmup_start_factor, self.args.eta_min)
            self._recipe_scheduler = True
        return super().create_scheduler(num_training_steps, optimizer)

    def train(self, *args, **kwargs):
        # The Trainer rebuilds on every call only a scheduler it built itself: drop ours too, since the step count
        # (and so the cosine) of this call may differ from the last.
        if self._recipe_scheduler:
            self.lr_scheduler, self._recipe_scheduler = None, False
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs.pop("source_ids", None)
        if inputs["pixel_values"].ndim == 5:  # validation in the native view: (images, crops, C, H, W)
            return self._native_view_loss(model, inputs, return_outputs)
        valid = int((inputs["labels"] != IGNORE_INDEX).sum())
        if model.training:
            self.skipped_images += len(inputs["labels"]) - valid
        if valid == 0 or (num_items_in_batch is not None and int(num_items_in_batch) == 0):
            # a batch of unreadable images only: a zero loss that keeps the graph (and DDP's hooks) intact
            outputs = model(pixel_values=inputs["pixel_values"])
            loss = outputs.logits.sum() * 0.0
            return (loss, outputs) if return_outputs else loss
        if self.teacher is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        outputs = model(pixel_values=inputs["pixel_values"])
        labels = inputs["labels"]
        keep = labels != IGNORE_INDEX
        hard = torch.nn.functional.cross_entropy(outputs.logits.float(), labels, ignore_index=IGNORE_INDEX,
                                                 label_smoothing=self.args.label_smoothing_factor)
        soft = distillation_loss(outputs.logits[keep].float(), self.teacher(inputs["pixel_values"][keep]),
                                 self.args.distill_temperature)
        loss = (1 - self.args.distill_alpha) * hard + self.args.distill_alpha * soft
        return (loss, outputs) if return_outputs else loss

    def _native_view_loss(self, model, inputs, return_outputs):
        """Each image's verdict from the mean of its crops' logits, as the app and the harness score it, and the loss
        of that verdict."""
        labels = inputs["labels"]
        logits = crop_averaged_logits(model, inputs["pixel_values"])
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)
        if not bool((labels != IGNORE_INDEX).any()):
            loss = logits.sum() * 0.0  # a batch of unreadable images only
        return (loss, ImageClassifierOutput(loss=loss, logits=logits)) if return_outputs else loss

    def lr_by_depth(self) -> dict[str, float]:
        """Current LR of the head's group and of the earliest group (largest / smallest lr_scale)."""
        groups = sorted(self.optimizer.param_groups, key=lambda g: g.get("lr_scale", 1.0))
        return {"lr_head": groups[-1]["lr"], "lr_earliest": groups[0]["lr"]}

    def log(self, logs: dict, start_time=None):
        if "learning_rate" in logs and self.optimizer is not None:
            logs.update(self.lr_by_depth())
            logs["learning_rate"] = logs["lr_head"]  # the Trainer reports group 0, the stem: report the head
        if "loss" in logs:
            logs["skipped_images"] = self.skipped_images  # this process's count; eval counts are global
        super().log(logs, start_time)
