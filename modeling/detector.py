"""Build, save and load the real/fake detector.

Why transformers' own `TimmWrapperForImageClassification` and not a class of ours: it ships with
transformers, so `pipeline("image-classification")` and `AutoModelForImageClassification` load our folders
with no `trust_remote_code`, and its config.json is timm's own format (`architecture`, `num_classes`,
`label_names`, `pretrained_cfg`), so `timm.create_model("local-dir:...")` / `"hf-hub:..."` load the very same
folder. A class of our own would need remote code on the Hub and a second weight layout for timm.

Two details make one folder serve both libraries:
- weights are saved with timm's key names (no `timm_model.` prefix); transformers adds the prefix back on load,
  as it does for every `timm/...` Hub checkpoint;
- `model_args` is written as `{}`: timm 1.0.31 crashes on the `null` transformers writes by default.

Calibration (temperature, decision threshold) lives in `config.calibration`, a plain dict that transformers
round-trips and timm ignores. The temperature is also folded into the classifier (logits / T), so every loader
(pipeline, AutoModel, timm) returns calibrated probabilities without knowing about it.
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from safetensors import SafetensorError
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform, resolve_data_config
from transformers import (
    AutoModelForImageClassification,
    TimmWrapperConfig,
    TimmWrapperForImageClassification,
)
from transformers.core_model_loading import PrefixChange

from .formats import DEFAULT_CALIBRATION, LABELS, calibration_from

logger = logging.getLogger(__name__)

# The seed recipe fine-tunes the FCMAE-pretrained, ImageNet-1k fine-tuned ConvNeXtV2 weights.
PREFERRED_PRETRAINED_TAG = "fcmae_ft_in1k"
# Evaluation preprocessing of the seed at 256 px: short side to 288, centre crop 256. Scaled with image_size.
EVAL_RESIZE_RATIO = 288 / 256
# Keys of timm's pretrained_cfg that describe where the *base* weights came from or other resolutions; they would
# mislead anyone reading a fine-tuned detector's config (and timm would try to fetch the base weights).
_BASE_SOURCE_KEYS = ("url", "hf_hub_id", "hf_hub_filename", "file", "state_dict", "source",
                     "test_input_size", "test_crop_pct", "min_input_size", "tag")


class PretrainedWeightsUnavailable(RuntimeError):
    """The backbone's pretrained weights could not be fetched (no network, offline mode, bad path)."""


def _pretrained_name(architecture: str) -> str:
    """timm model name with the pretrained tag the seed used, if timm has it for this architecture."""
    if "." in architecture:
        return architecture
    tagged = f"{architecture}.{PREFERRED_PRETRAINED_TAG}"
    return tagged if timm.models.get_pretrained_cfg(tagged) is not None else architecture


def _hub_reachable(timeout: float = 5.0) -> bool:
    """One TCP connect to the Hub endpoint. huggingface_hub retries a dead network for about a minute before
    failing; a detector that says so at once is friendlier. Behind a proxy we cannot tell, so we let it try."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _create_backbone(architecture: str, pretrained: bool | str | Path, num_classes: int, **model_kwargs):
    """Returns (timm model, name of the base weights or None)."""
    if pretrained is False or pretrained is None:
        return timm.create_model(architecture, pretrained=False, num_classes=num_classes, **model_kwargs), None

    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        path = Path(pretrained)
        weights = path / "model.safetensors" if path.is_dir() else path
        if not weights.is_file():
            raise PretrainedWeightsUnavailable(
                f"pretrained={str(pretrained)!r}: no weights file found there (expected a timm .safetensors file "
                "or a folder holding model.safetensors). Pass pretrained=False for a random initialisation."
            )
        model = timm.create_model(architecture, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay=dict(file=str(weights)), **model_kwargs)
        return model, str(weights)

    name = _pretrained_name(architecture)
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id if timm.models.get_pretrained_cfg(name) else None
    advice = ("Pass pretrained=False for a random initialisation (--pretrained false on the command line), "
              "or pretrained='<path>' to a local copy of the weights (a timm .safetensors file or a folder "
              "holding model.safetensors).")
    cached = False
    if hub_id:
        from huggingface_hub import try_to_load_from_cache
        cached = isinstance(try_to_load_from_cache(hub_id, "model.safetensors"), str)
    if not cached and not _hub_reachable():
        raise PretrainedWeightsUnavailable(
            f"Cannot fetch the pretrained weights '{hub_id or name}' for {architecture}: the Hugging Face Hub is "
            f"not reachable from here and they are not in the local cache. {advice}")
    try:
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, **model_kwargs)
    except (OSError, RuntimeError) as e:  # offline mode, HTTP errors, missing files
        raise PretrainedWeightsUnavailable(
            f"Could not load the pretrained weights '{hub_id or name}' for {architecture}: {e}. {advice}") from e
    return model, hub_id or name


def data_config(model) -> dict:
    """timm's data config (input_size, mean, std, crop_pct, interpolation) from the detector's config.
    Not resolve_data_config(model=model.timm_model): after loading, the wrapped net holds timm's defaults."""
    return resolve_data_config(pretrained_cfg=model.config.pretrained_cfg)


def eval_transform(model):
    """The model's own evaluation preprocessing (short side to size / crop_pct, centre crop), the one
    TimmWrapperImageProcessor, and so pipeline(), applies: PIL image -> normalised tensor."""
    return create_transform(**data_config(model), is_training=False)


def eval_size_cfg(image_size: int, eval_resize_ratio: float = EVAL_RESIZE_RATIO) -> dict:
    """pretrained_cfg entries for evaluation at image_size: timm resizes the short side to size / crop_pct, so
    crop_pct = size / round(size * ratio) gives a short side of exactly size * ratio, then a centre crop."""
    return dict(input_size=(3, image_size, image_size), crop_pct=image_size / round(image_size * eval_resize_ratio))


def _detector_pretrained_cfg(model: torch.nn.Module, image_size: int, num_classes: int, base: str | None,
                             eval_resize_ratio: float = EVAL_RESIZE_RATIO) -> dict:
    cfg = {k: v for k, v in model.pretrained_cfg.items() if k not in _BASE_SOURCE_KEYS and v is not None}
    if base is None:
        cfg.pop("license", None)  # random weights inherit no license from timm's registry entry
    cfg.update(
        **eval_size_cfg(image_size, eval_resize_ratio),
        crop_mode="center",
        interpolation="bicubic",
        mean=tuple(IMAGENET_DEFAULT_MEAN),
        std=tuple(IMAGENET_DEFAULT_STD),
        num_classes=num_classes,
        fixed_input_size=False,
    )
    return cfg


def build_detector(
    architecture: str = "convnextv2_base",
    pretrained: bool | str | Path = True,
    image_size: int = 256,
    labels: tuple[str, ...] | list[str] = LABELS,
    input_filter: str | None = None,
    eval_resize_ratio: float = EVAL_RESIZE_RATIO,
    **model_kwargs,
) -> TimmWrapperForImageClassification:
    """A transformers image classifier around `timm.create_model(architecture)`.

    pretrained: True takes timm's Hub weights (`timm/<arch>.fcmae_ft_in1k` where it exists); a path takes a local
    timm weights file or folder; False initialises at random. The classifier is always new, sized to `labels`.
    model_kwargs go to `timm.create_model` (e.g. drop_path_rate) and are stored so the folder rebuilds the same net.
    input_filter="npr" makes the stem blind to image content (see `constrain_input_filter`).
    eval_resize_ratio: evaluation resizes the short side to image_size * ratio, then centre-crops image_size
    (the seed's 288/256; 1.0 keeps a 256-px image's native pixels at 256).
    """
    labels = list(labels)
    backbone, base = _create_backbone(architecture, pretrained, len(labels), **model_kwargs)
    config = TimmWrapperConfig(
        architecture=architecture.split(".")[0],
        pretrained_cfg=_detector_pretrained_cfg(backbone, image_size, len(labels), base, eval_resize_ratio),
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        model_args=dict(model_kwargs),
    )
    config.base_model = base
    config.calibration = dict(DEFAULT_CALIBRATION)
    config.input_filter = input_filter
    model = TimmWrapperForImageClassification(config)
    model.timm_model.load_state_dict(backbone.state_dict())
    constrain_input_filter(model)
    return _saves_timm_keys(model)


def _saves_timm_keys(model: TimmWrapperForImageClassification) -> TimmWrapperForImageClassification:
    """Make every save of this model (save_pretrained, push_to_hub, the Trainer's checkpoints and save_model, which
    all go through save_pretrained) write timm's key names and `model_args: {}`, so timm loads the folder too.

    transformers 5.23 reverts the key renamings a model was loaded with when it saves
    (`revert_weight_conversion` reads `model._weight_conversions`); `from_pretrained` of a timm-keyed folder
    records the "add the timm_model. prefix" renaming there, but a model built here has none, and transformers
    offers no public argument for it. So the renaming its loader uses for timm_wrapper is recorded by hand.
    """
    model._weight_conversions = [PrefixChange(prefix_to_add=model.base_model_prefix)]
    if model.config.model_args is None:  # timm 1.0.31 crashes on the null transformers writes by default
        model.config.model_args = {}
    return model


# "npr_half": both views in one plain stem, half its channels content-blind and half free to read the image
INPUT_FILTERS = (None, "npr", "npr_half")


@torch.no_grad()
def constrain_input_filter(model) -> None:
    """Keep the stem blind to content: with input_filter="npr" its weights sum to zero over every 2x2 pixel block.

    Why: a detector should read generation traces, not subject matter, and the training fakes differ from the
    reals in content. NPR (Tan et al., CVPR 2024) feeds the net x - up(down(x)), the residual between neighbouring
    pixels, where upsampling traces live. For a stem that is a conv with even kernel and stride (ConvNeXt's 4x4/4
    patchify), that residual followed by the stem is itself such a conv whose weights sum to zero over each 2x2
    block. So we keep that constraint on the weights instead (projected after every optimizer step): the saved
    model is a plain timm network that pipeline(), AutoModel and timm run with no custom code, and it ignores any
    image that is constant on 2x2 blocks, i.e. the content seen at half resolution.
    """
    mode = getattr(model.config, "input_filter", None)
    if mode not in INPUT_FILTERS:
        raise ValueError(f"unknown input_filter {mode!r}; known: {INPUT_FILTERS}")
    if mode is None:
        return
    stem = model.timm_model.get_submodule(model.config.pretrained_cfg.get("first_conv", "stem.0"))
    k, stride = stem.kernel_size, stem.stride
    if not isinstance(stem, torch.nn.Conv2d) or k[0] % 2 or k[1] % 2 or stride[0] % 2 or stride[1] % 2 \
            or any(stem.padding):
        raise ValueError(f"input_filter={mode!r} needs a stem conv with even kernel and stride and no padding "
                         f"(a patchify stem like ConvNeXt's); {model.config.architecture} has {stem}")
    o, c, kh, kw = stem.weight.shape
    blind = o if mode == "npr" else o // 2
    blocks = stem.weight[:blind].view(blind, c, kh // 2, 2, kw // 2, 2)
    blocks.sub_(blocks.mean(dim=(3, 5), keepdim=True))


def save_detector(model: TimmWrapperForImageClassification, folder: str | Path, **save_kwargs) -> Path:
    """save_pretrained in a form that transformers and timm both load: safetensors with timm's key names and
    `model_args: {}` (also for a TimmWrapperForImageClassification loaded by other means than load_detector).
    The preprocessing needs no file of its own: TimmWrapperImageProcessor reads config.json's pretrained_cfg."""
    folder = Path(folder)
    _saves_timm_keys(model).save_pretrained(folder, **save_kwargs)
    return folder


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def load_detector(name_or_path: str | Path, **kwargs) -> TimmWrapperForImageClassification:
    """Load a detector folder or Hub repo; safetensors only. A folder whose weights are only pickles is refused
    before anything unpickles them: a pickle can run arbitrary code when loaded."""
    path = Path(name_or_path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
        raise ValueError(
            f"{path} holds no safetensors weights{' (found pickle files: ' + ', '.join(pickles) + ')' if pickles else ''}."
            " Only safetensors are loaded, because a pickle can execute code when loaded. Convert trusted weights "
            "with safetensors.torch.save_file.")
    try:
        model = AutoModelForImageClassification.from_pretrained(str(name_or_path), use_safetensors=True, **kwargs)
    except SafetensorError as e:  # its own message ("header too large") does not say which file or why
        raise ValueError(f"{name_or_path}: the weights file is not valid safetensors ({e}): a truncated copy, or "
                         "another format under a .safetensors name.") from e
    return _saves_timm_keys(model)


def fake_index(config) -> int:
    return int(config.label2id.get("fake", config.num_labels - 1))


def get_calibration(config) -> dict:
    return calibration_from(getattr(config, "calibration", None))


def set_calibration(model, **fields) -> dict:
    cal = get_calibration(model.config)
    cal.update(fields)
    model.config.calibration = cal
    return cal


@torch.no_grad()
def apply_temperature(model: TimmWrapperForImageClassification, temperature: float) -> dict:
    """Fold logits / temperature into the classifier so every loader gets calibrated probabilities.
    Composes with an earlier fold: the stored temperature is the total one."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    head = model.timm_model.get_classifier()
    head.weight.div_(temperature)
    if head.bias is not None:
        head.bias.div_(temperature)
    return set_calibration(model, temperature=get_calibration(model.config)["temperature"] * temperature)
