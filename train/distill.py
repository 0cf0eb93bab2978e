"""Knowledge distillation: a trained detector (the teacher) lends its soft targets to the one being trained.

The use it is for: a large or pretrained detector (ConvNeXtV2-Base, an ImageNet EfficientNet) teaches a small one
(ConvNeXtV2-atto) that a CPU Space can afford. The teacher may be any saved detector: its own architecture, input
size, normalisation and label order are taken from its config, so the student's batches are converted for it.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from modeling import load_detector
from modeling.detector import fake_index


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 x KL(teacher || student) at temperature T, averaged over the batch. T^2 keeps the gradients' size
    independent of T, so the weight against the hard-label loss means the same at any temperature."""
    if student_logits.numel() == 0:
        return student_logits.sum() * 0.0
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits / temperature, dim=-1),
                    reduction="batchmean", log_target=True) * temperature**2


class Teacher(torch.nn.Module):
    """A frozen saved detector that scores the student's batches: pixels are taken back from the student's
    normalisation into the teacher's, resized to the teacher's input size only if `resize` (a convnet reads
    any size, and resampling would wash out the very traces both models read), and the logits are put in the
    student's label order."""

    def __init__(self, model, student_config, resize: bool = False):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        teacher_cfg, student_cfg = model.config.pretrained_cfg, student_config.pretrained_cfg
        for name, cfg in (("student_mean", student_cfg["mean"]), ("student_std", student_cfg["std"]),
                          ("teacher_mean", teacher_cfg["mean"]), ("teacher_std", teacher_cfg["std"])):
            self.register_buffer(name, torch.tensor(cfg, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.size = tuple(teacher_cfg["input_size"][-2:]) if resize else None
        # teacher class index for each student class: binary detectors agree on "fake"; the other is "real"
        student_fake, teacher_fake = fake_index(student_config), fake_index(model.config)
        order = [teacher_fake if i == student_fake else 1 - teacher_fake for i in range(2)]
        self.register_buffer("order", torch.tensor(order), persistent=False)
        # an input filter reads one-grey-level differences that bf16/fp16 autocast rounds away (see train/run.py)
        self.needs_fp32 = bool(getattr(model.config, "input_filter", None))

    @classmethod
    def load(cls, path: str, student_config, resize: bool = False) -> "Teacher":
        return cls(load_detector(path), student_config, resize)

    @torch.no_grad()
    def forward(self, student_pixels: torch.Tensor) -> torch.Tensor:
        x = student_pixels.float() * self.student_std + self.student_mean
        x = (x - self.teacher_mean) / self.teacher_std
        if self.size is not None and tuple(x.shape[-2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False)
        with torch.autocast(x.device.type, enabled=False) if self.needs_fp32 else contextlib.nullcontext():
            logits = self.model(pixel_values=x).logits
        return logits.float()[:, self.order]
