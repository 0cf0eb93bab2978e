"""The patch map, read from the same forward pass as the verdict.

The network's last stage is a grid of feature cells (one per FEATURE_STRIDE pixels). The classifier's head pools
that grid globally, normalises and applies its linear layer. A patch's score is the same head applied to the mean of
the cells under a window of the training crop size (stride one cell): no extra forward pass, and a window covering
the whole input gives exactly the verdict's logits. A cell's features see beyond its window (ConvNeXt's receptive
field), so a patch score says "the model's evidence located here", not "this crop scored on its own".

The runtime returns one array per image: the verdict's logits, then every window's logits (rows x cols x classes),
so every backend (OpenVINO, ONNX Runtime, torch) keeps a single output. Torch is imported only to build the wrapped
network (a converted model in the cache needs none).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .formats import read_training_record, scoring_from

FEATURE_STRIDE = 32  # ConvNeXt's total stride: the side of one cell of the last stage, in input pixels


def training_crop_size(model_dir: Path | None, input_size: int) -> int:
    """The crop size the model was trained on (training_config.json's augmentation profiles), else half the input;
    a whole number of cells, at least one, at most the input."""
    try:
        record = read_training_record(model_dir) if model_dir else None
    except (OSError, ValueError, TypeError):  # a damaged record costs the map its window size, not the model
        record = None
    sizes = record.crop_sizes() if record else []
    size = min(max(min(sizes, default=input_size // 2), FEATURE_STRIDE), input_size)
    return size // FEATURE_STRIDE * FEATURE_STRIDE


def window_cells(model_dir: Path | None, config: dict) -> int:
    """Cells per window side for a model folder: what the wrapped network is built with and its cache is keyed by.
    In the native view (config.scoring) a window never exceeds one crop."""
    cells = training_crop_size(model_dir, min(config["pretrained_cfg"]["input_size"][1:])) // FEATURE_STRIDE
    scoring = scoring_from(config.get("scoring"))
    return max(1, min(cells, scoring["native_crop_size"] // FEATURE_STRIDE)) if scoring else cells


def with_patch_logits(net, cells: int):
    """The timm network, returning cat(logits, every window's logits flattened) per image (see the module doc)."""
    import torch

    class WithPatchLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        @property
        def stages(self):  # backends.to_openvino keeps the last stage out of int8 by its name
            return getattr(self.net, "stages", None)

        def forward(self, x):
            features = self.net.forward_features(x)
            logits = self.net.forward_head(features)
            pooled = torch.nn.functional.avg_pool2d(features, cells, stride=1)  # (N, C, rows, cols)
            n, c, rows, cols = pooled.shape
            # Each window as a 1x1 map: the head's global pooling is then the identity, the rest unchanged.
            cells_as_maps = pooled.permute(0, 2, 3, 1).reshape(n * rows * cols, c, 1, 1)
            windows = self.net.forward_head(cells_as_maps).reshape(n, -1)
            return torch.cat([logits, windows], 1)

    return WithPatchLogits().eval()


@dataclass
class PatchMap:
    """p(fake) of each window (rows x cols) over the model's input crop, and where that crop lies in the image."""
    probabilities: np.ndarray
    window: int
    stride: int
    crop_size: tuple[int, int]  # (height, width) of the model's input
    crop_box: tuple[float, float, float, float]  # left, top, right, bottom in the input image's pixels

    def pixel_map(self) -> np.ndarray:
        """(height, width) of the model's input: the mean p(fake) of the windows covering each pixel."""
        total, count = np.zeros(self.crop_size), np.zeros(self.crop_size)
        for (row, col), p in np.ndenumerate(self.probabilities):
            y, x = row * self.stride, col * self.stride
            total[y:y + self.window, x:x + self.window] += p
            count[y:y + self.window, x:x + self.window] += 1
        return total / np.maximum(count, 1)


def grid_shape(input_size: tuple[int, int], window: int) -> tuple[int, int]:
    """(rows, cols) of windows the wrapped network scores for an input of input_size (height, width)."""
    (height, width), cells = input_size, window // FEATURE_STRIDE
    return height // FEATURE_STRIDE - cells + 1, width // FEATURE_STRIDE - cells + 1
