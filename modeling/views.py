"""The native view: what a model with config.scoring (modeling/formats.py) reads of an image. The app
(modeling/inference.py), the evaluation harness and calibration (train/evaluation/predict.py) all cut their crops
here, so a threshold fitted on val applies to what the page scores.

Why a grid of native crops: generation traces live at the pixel scale, and resizing a 1024-px image to 256 px
averages them away. A model trained on native-pixel crops (the "native" augmentation profile) scores grid x grid
crops of that size, spread evenly from corner to corner over the unresized image, and averages their logits
(Chai et al. 2020, "What makes fake images detectable?", aggregate patches the same way). A fixed grid, not every
tile, keeps the cost of a 12 MP photo the same as a thumbnail's.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .formats import scoring_from


def native_crop_boxes(width: int, height: int, size: int, grid: int) -> list[tuple[int, int, int, int]]:
    """(left, top, right, bottom) of each crop, row by row, in an image of at least size x size."""
    tops, lefts = (np.linspace(0, n - size, grid).round().astype(int) for n in (height, width))
    return [(int(left), int(top), int(left) + size, int(top) + size) for top in tops for left in lefts]


def native_crops(img: Image.Image, size: int, grid: int) -> np.ndarray:
    """RGB PIL image -> uint8 (grid*grid, size, size, 3): the crops the native view scores. An image whose short
    side is below `size` is first enlarged (bicubic) until it is `size`."""
    img = img.convert("RGB")
    if min(img.size) < size:
        scale = size / min(img.size)
        img = img.resize((max(size, round(img.width * scale)), max(size, round(img.height * scale))), Image.BICUBIC)
    # Crop before converting: a 12 MP photo as float32 would cost 150 MB and most of the time
    return np.stack([np.asarray(img.crop(box)) for box in native_crop_boxes(img.width, img.height, size, grid)])


def served_input_shape(config: dict) -> tuple[int, int, int, int]:
    """(inputs, channels, height, width) of the network call for one image as the model is served: its grid of
    native crops, else the one resized view of pretrained_cfg's input_size. Backends compile or warm up for it."""
    scoring = scoring_from(config.get("scoring"))
    if scoring:
        return scoring["native_grid"] ** 2, 3, scoring["native_crop_size"], scoring["native_crop_size"]
    return 1, *config["pretrained_cfg"]["input_size"]
