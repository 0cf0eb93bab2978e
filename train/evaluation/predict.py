"""Image files -> the model's logits, decoded as the app decodes uploads and preprocessed in the view the model is
served in (resolve_scoring): its own eval transform (modeling.detector.eval_transform) or the native view's grid of
crops (modeling/views.py, logits averaged), optionally perturbed in between (the robustness sweep)."""
from __future__ import annotations

import contextlib

import datasets
import numpy as np
import torch
from torchvision.transforms import v2 as transforms_v2
from tqdm.auto import tqdm

from modeling.detector import eval_transform, fake_index
from modeling.formats import Scoring, scoring_from
from modeling.imageio import ImageReadError, read_image
from modeling.views import native_crops

DEFAULT_NATIVE_GRID = 4


class _Images(torch.utils.data.Dataset):
    """Files (paths or bytes) -> tensors. An unreadable file stops the run (naming it) instead of being skipped:
    skipping would quietly change what the reported numbers were measured on."""

    def __init__(self, files, transform, perturb=None):
        self.files, self.transform, self.perturb = files, transform, perturb

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            img = read_image(self.files[i])
        except ImageReadError as e:
            raise ImageReadError(f"{self.files[i] if isinstance(self.files[i], str) else f'image {i}'}: {e}") from e
        if self.perturb is not None:
            img = self.perturb(img)
        return self.transform(img)


class NativeCrops:
    """PIL image -> (grid*grid, 3, size, size): modeling.views.native_crops, normalised like the model's input."""

    def __init__(self, size: int, grid: int, mean, std):
        self.size, self.grid = size, grid
        self.normalize = transforms_v2.Compose([transforms_v2.ToDtype(torch.float32, scale=True),
                                                transforms_v2.Normalize(mean, std)])

    def __call__(self, img):
        return self.normalize(torch.from_numpy(native_crops(img, self.size, self.grid)).permute(0, 3, 1, 2))


def resolve_scoring(model, native_crop_size: int | None = None, native_grid: int | None = None) -> Scoring | None:
    """The view to score: the model's own (config.scoring) unless native_crop_size is given; 0 asks for the
    resized view."""
    if native_crop_size is None:
        return scoring_from(getattr(model.config, "scoring", None))
    if native_crop_size == 0:
        return None
    return scoring_from({"native_crop_size": native_crop_size, "native_grid": native_grid or DEFAULT_NATIVE_GRID})


def scoring_transform(model, scoring: Scoring | None):
    """The model's eval transform (scoring None), or the native view's grid of crops."""
    if scoring is None:
        return eval_transform(model)
    cfg = model.config.pretrained_cfg
    return NativeCrops(scoring["native_crop_size"], scoring["native_grid"], cfg["mean"], cfg["std"])


def image_files(ds: datasets.Dataset) -> list:
    return [x["bytes"] or x["path"] for x in ds.cast_column("image", datasets.Image(decode=False))["image"]]


def autocast_dtype(config, device: torch.device) -> torch.dtype | None:
    """fp16 autocast on CUDA; None (fp32) on the CPU and for a model with an input filter ("npr", "npr_half"),
    whose content-blind stem reads pixel differences of one grey level that half precision rounds away: training
    (train/run.py), distillation and the serving backends keep such a model in fp32 too."""
    if device.type != "cuda" or getattr(config, "input_filter", None):
        return None
    return torch.float16


def crop_averaged_logits(model, pixels: torch.Tensor) -> torch.Tensor:
    """(images, crops, C, H, W) -> (images, classes): each image's crop logits averaged, the native view's verdict
    (the Trainer's native validation computes it here too)."""
    return model(pixel_values=pixels.flatten(0, 1)).logits.float().unflatten(0, pixels.shape[:2]).mean(1)


@torch.inference_mode()
def predict_logits(model, files, transform, batch_size=64, num_workers=0, perturb=None,
                   desc: str = "scoring") -> np.ndarray:
    """Logits of every file, in order, with a progress bar (`desc`) over the images."""
    device = next(model.parameters()).device
    dtype = autocast_dtype(model.config, device)
    loader = torch.utils.data.DataLoader(_Images(files, transform, perturb), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    outputs = []
    with tqdm(total=len(files), desc=desc, unit="img") as progress:
        for pixels in loader:
            pixels = pixels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
                # NativeCrops gives (images, crops, C, H, W): average each image's crop logits
                logits = (crop_averaged_logits(model, pixels) if pixels.ndim == 5
                          else model(pixel_values=pixels).logits.float())
            outputs.append(logits.cpu())
            progress.update(len(outputs[-1]))
    return torch.cat(outputs).numpy()


def class_targets(labels, config) -> np.ndarray:
    """Data labels (real=0, fake=1) -> the model's class indices (its label order may differ)."""
    fake = fake_index(config)
    real = int(config.label2id.get("real", 1 - fake))
    return np.where(np.asarray(labels) == 1, fake, real)
