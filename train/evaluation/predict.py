"""Image files -> the model's logits, decoded as the app decodes uploads and preprocessed with the model's own eval
transform (modeling.detector.eval_transform), optionally perturbed in between (the robustness sweep)."""
from __future__ import annotations

import datasets
import numpy as np
import torch

from modeling.detector import fake_index
from modeling.imageio import ImageReadError, read_image


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


def image_files(ds: datasets.Dataset) -> list:
    return [x["bytes"] or x["path"] for x in ds.cast_column("image", datasets.Image(decode=False))["image"]]


@torch.inference_mode()
def predict_logits(model, files, transform, batch_size=64, num_workers=0, perturb=None) -> np.ndarray:
    device = next(model.parameters()).device
    loader = torch.utils.data.DataLoader(_Images(files, transform, perturb), batch_size=batch_size,
                                         num_workers=num_workers, pin_memory=device.type == "cuda")
    outputs = []
    for pixels in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            outputs.append(model(pixel_values=pixels.to(device, non_blocking=True)).logits.float().cpu())
    return torch.cat(outputs).numpy()


def class_targets(labels, config) -> np.ndarray:
    """Data labels (real=0, fake=1) -> the model's class indices (its label order may differ)."""
    fake = fake_index(config)
    real = int(config.label2id.get("real", 1 - fake))
    return np.where(np.asarray(labels) == 1, fake, real)
