"""Average the weights of several detectors of one architecture: a uniform model soup (Wortsman et al. 2022,
"Model soups"). Checkpoints of one run, or runs fine-tuned from the same start, often rank better averaged than
any one of them, at no cost at inference.

    python -m train.soup --output runs/soup runs/r5_wild/checkpoint-2500 runs/r5_native/checkpoint-4000

The soup keeps the first ingredient's config.json (preprocessing, labels, calibration) and training_config.json
(a Trainer checkpoint's: its run folder's), and records its ingredients in config.soup_of. Its logits are no
ingredient's, so calibrate it afterwards on val (python -m train.evaluation --calibrate ...). A stem constraint
(--input_filter npr) is linear, so an average of constrained stems keeps it.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from modeling.detector import load_detector, save_detector
from modeling.formats import TRAINING_RECORD_FILE


def average_state_dicts(state_dicts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of float tensors; integer buffers (counters) from the first. Keys and shapes must
    agree: ingredients of different architectures cannot be averaged."""
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        if sd.keys() != first.keys() or any(sd[k].shape != first[k].shape for k in first):
            raise ValueError(f"ingredient {i} has other weights than ingredient 0 (another architecture?)")
    return {k: torch.stack([sd[k].float() for sd in state_dicts]).mean(0).to(v.dtype) if v.is_floating_point()
            else v.clone() for k, v in first.items()}


def training_record_file(model_dir: str | Path) -> Path | None:
    """A model's training_config.json; a Trainer checkpoint has none of its own, and its run folder's is its own."""
    for folder in (Path(model_dir), Path(model_dir).parent):
        if (folder / TRAINING_RECORD_FILE).is_file():
            return folder / TRAINING_RECORD_FILE
    return None


def make_soup(ingredients: list[str | Path], output: str | Path) -> Path:
    if len(ingredients) < 2:
        raise ValueError("a soup needs at least two ingredients")
    models = [load_detector(p) for p in ingredients]
    soup = models[0]
    soup.load_state_dict(average_state_dicts([m.state_dict() for m in models]))
    soup.config.soup_of = [str(p) for p in ingredients]
    output = save_detector(soup, output)
    record = training_record_file(ingredients[0])
    if record:  # the recipe of the first ingredient: the patch map's window, the card's recipe
        shutil.copy(record, output / TRAINING_RECORD_FILE)
    return output


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m train.soup", description=__doc__.split("\n\n")[0])
    parser.add_argument("ingredients", nargs="+", help="detector folders (checkpoints) of one architecture")
    parser.add_argument("--output", required=True, help="where the averaged detector is saved")
    args = parser.parse_args(argv)
    output = make_soup(args.ingredients, args.output)
    print(f"averaged {len(args.ingredients)} detectors into {output}")
    return output


if __name__ == "__main__":
    main()
