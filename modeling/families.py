"""Generator families: the free-text `generator` field of metadata.csv grouped by model lineage, so results can be
read per family and a model card can say which families a detector saw in training and which it never saw.

Order matters: the first pattern that matches names the family (Stable Diffusion 3 before the other SD versions,
DALL-E 3 before DALL-E mini, VQGAN models before GANs). A generator that matches none is its own family.

Standard library only: the evaluation harness, the model card (hub/) and the app all read it.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

FAMILIES: tuple[tuple[str, str], ...] = (
    ("DALL-E 3", r"dall-?e ?3"),
    ("Stable Diffusion 3", r"\bsd ?3|stable diffusion 3"),
    ("FLUX.1", r"flux|\buno\b|ominicontrol"),
    ("Stable Diffusion 1/2/XL", r"\bsd ?(1|2|xl)|sdxl|stable diffusion|facechain|easyphoto|\btcd\b"),
    ("other text-to-image", r"kolors|instantid|cascade|hunyuan|deepfloyd|kandinsky|karlo|dall-?e|midjourney|"
                            r"omnigen|hidream|lumina|hart\b|infinity|meissonic|show-o|vqgan\+clip|latent consistency|"
                            r"\bpcm\b|versatile diffusion"),
    ("class-conditional diffusion/AR (ImageNet, LSUN)",
     r"\bdit\b|\bsit\b|u-vit|lightningdit|edm2|\bldm\b|vqgan \+ transformer|rq-transformer|score sde"),
    ("GAN", r"gan\b|gan[ -(]|stylegan|\bpsp\b|restyle|sam age|\bcut\b|eg3d|spade|pix2pix|closed-form"),
)
_COMPILED = tuple((name, re.compile(pattern, re.IGNORECASE)) for name, pattern in FAMILIES)
REAL = "none"  # the generator field of real images


def family_of(generator: str) -> str:
    if generator == REAL:
        return REAL
    for name, pattern in _COMPILED:
        if pattern.search(generator):
            return name
    return generator


def families_of(generators: Iterable[str]) -> list[str]:
    return [family_of(g) for g in generators]


def seen_in_training(generator: str, training_generators: Iterable[str]) -> str:
    """'generator seen', 'family seen' or 'never seen', against the fake generators a model was trained on."""
    training_generators = set(training_generators)
    if generator in training_generators:
        return "generator seen"
    if family_of(generator) in set(families_of(training_generators)):
        return "family seen"
    return "never seen"

