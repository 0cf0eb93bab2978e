"""Provenance signals read from an image file's metadata: camera EXIF, C2PA/JUMBF presence, generator metadata.

They are shown beside the detector's verdict and never mixed into its score: metadata is trivially stripped or
forged, so its absence says nothing and its presence is a claim, not proof. `declared_generator` is that claim in
a few words, when the file's own metadata says a generator made it (a C2PA or XMP digital source type of
`trainedAlgorithmicMedia`, a generator's PNG settings chunk, a generator named as the creating software). The
C2PA check is presence only; verifying a manifest's signature needs a C2PA library and trust lists.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

from PIL import Image

from .imageio import ALLOWED_FORMATS

# Tools whose name in Software/CreatorTool/XMP means "a generator made or edited this".
GENERATOR_NAMES = (
    "stable diffusion", "stablediffusion", "sdxl", "midjourney", "dall-e", "dall·e", "dalle", "firefly",
    "imagen", "novelai", "comfyui", "automatic1111", "invokeai", "fooocus", "leonardo", "flux", "ideogram",
    "gpt-4o", "chatgpt", "openai", "bing image creator", "craiyon", "dreamstudio", "nightcafe", "runway",
)
# PNG text chunks written by generator front ends: (what the chunk is, the generator it names).
GENERATOR_PNG_KEYS = {
    "parameters": ("Stable Diffusion web UI generation settings", "Stable Diffusion (web UI)"),
    "prompt": ("ComfyUI prompt graph", "ComfyUI"),
    "workflow": ("ComfyUI workflow", "ComfyUI"),
    "invokeai_metadata": ("InvokeAI metadata", "InvokeAI"),
    "sd-metadata": ("InvokeAI metadata", "InvokeAI"),
    "dream": ("InvokeAI/lstein metadata", "InvokeAI"),
    "novelai": ("NovelAI metadata", "NovelAI"),
}
A_GENERATOR = "a generative AI model"  # the claim when the metadata names no tool
# IPTC "digital source type" values for generated media (written by Adobe, Google, OpenAI, Microsoft...).
_AI_SOURCE_TYPE = re.compile(rb"(compositeWith)?trainedAlgorithmicMedia|algorithmicMedia", re.IGNORECASE)
_XMP_TOOL = re.compile(rb"(?:xmp:CreatorTool|tiff:Software|photoshop:Software)(?:=\"|>)([^\"<]{1,200})")
_EXIF_TAGS = {"make": 0x010F, "model": 0x0110, "software": 0x0131}


@dataclass
class Provenance:
    camera_make: str | None = None
    camera_model: str | None = None
    software: str | None = None
    c2pa: bool = False
    generator_metadata: list[str] = field(default_factory=list)  # human-readable findings
    declared_generator: str | None = None  # "the file's metadata says it was made by <this>"

    def as_dict(self) -> dict:
        return {"camera_make": self.camera_make, "camera_model": self.camera_model, "software": self.software,
                "c2pa_present": self.c2pa, "generator_metadata": list(self.generator_metadata),
                "declared_generator": self.declared_generator}

    def markdown(self) -> str:
        camera = " ".join(v for v in (self.camera_make, self.camera_model) if v)
        lines = [
            f"- **Camera (EXIF):** {camera or 'none recorded'}",
            f"- **Software (EXIF):** {self.software or 'none recorded'}",
            "- **C2PA / Content Credentials:** "
            + ("present (signature not verified here)" if self.c2pa else "none found"),
            "- **Generator metadata:** " + ("; ".join(self.generator_metadata) or "none found"),
        ]
        return "**Provenance** (read from the file's metadata; not part of the score)\n\n" + "\n".join(lines)


def _names_generator(text: str) -> bool:
    lowered = text.lower()
    return any(name in lowered for name in GENERATOR_NAMES)


def _clean(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip() if value is not None else ""
    return text[:200] or None


def _has_c2pa(raw: bytes) -> bool:
    """A C2PA manifest store is a JUMBF box labelled "c2pa": in JPEG APP11 segments, a PNG caBX chunk, or a
    RIFF/ISO-BMFF box. Looking for both markers in the bytes finds all of them without a parser per format."""
    return b"c2pa" in raw and (b"jumb" in raw or b"caBX" in raw)


def _xmp_packet(raw: bytes) -> bytes | None:
    """The first XMP packet (plain find, not a regex: linear time on hostile input)."""
    start = raw.find(b"<x:xmpmeta")
    end = raw.find(b"</x:xmpmeta>", start) if start >= 0 else -1
    return raw[start:end] if end > start else None


def read_provenance(raw: bytes) -> Provenance:
    """Never raises: unreadable metadata just means fewer signals."""
    found = Provenance(c2pa=_has_c2pa(raw))
    try:
        with Image.open(io.BytesIO(raw), formats=ALLOWED_FORMATS) as img:
            exif = img.getexif()
            found.camera_make = _clean(exif.get(_EXIF_TAGS["make"]))
            found.camera_model = _clean(exif.get(_EXIF_TAGS["model"]))
            found.software = _clean(exif.get(_EXIF_TAGS["software"]))
            text_chunks = dict(getattr(img, "text", None) or {}) if img.format == "PNG" else {}
    except Exception:  # noqa: BLE001 - hostile metadata; the image itself is read by read_image
        text_chunks = {}
    named: list[str] = []  # generators named by the metadata, most specific first
    source_type_says_generated = False
    if found.software and _names_generator(found.software):
        found.generator_metadata.append(f"EXIF Software names a generator ({found.software!r})")
        named.append(found.software)
    for key, value in text_chunks.items():
        if key.lower() in GENERATOR_PNG_KEYS:
            what, generator = GENERATOR_PNG_KEYS[key.lower()]
            found.generator_metadata.append(f"PNG text chunk '{key}' ({what})")
            named.append(generator)
        elif key.lower() in ("software", "source", "comment", "description") and _names_generator(str(value)):
            found.generator_metadata.append(f"PNG text chunk '{key}' names a generator ({_clean(value)!r})")
            named.append(_clean(value))
    xmp = _xmp_packet(raw)
    if xmp:
        if _AI_SOURCE_TYPE.search(xmp):
            found.generator_metadata.append("XMP DigitalSourceType says the image was made by a generative model")
            source_type_says_generated = True
        for tool in _XMP_TOOL.findall(xmp):
            tool = _clean(tool)
            if tool and _names_generator(tool):
                found.generator_metadata.append(f"XMP creator tool names a generator ({tool!r})")
                named.insert(0, tool)
    if found.c2pa and not source_type_says_generated and _AI_SOURCE_TYPE.search(raw):  # in the C2PA manifest
        found.generator_metadata.append("C2PA data gives a generative-AI digital source type")
        source_type_says_generated = True
    if named or source_type_says_generated:
        found.declared_generator = named[0] if named else A_GENERATOR
    return found
