"""Latent autoencoders used to make aligned (real, reconstruction) training pairs.

Every autoencoder here is wrapped as `reconstruct(x) -> x'` on float images in [0, 1], shape (B, 3, H, W),
so the data script does not care which family it got.

- TAEF2: tiny distilled FLUX.2 autoencoder (TAESD family, MIT, madebyollin/taesd). Implemented here rather than
  pulled from a package so that the bundled weights work on a fresh clone with no extra install.
- diffusers AutoencoderKL (e.g. stabilityai/sd-vae-ft-mse): imported lazily, diffusers is an optional extra.
"""
from pathlib import Path

import torch
from torch import nn


def conv(n_in, n_out, **kwargs):
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    # soft clamp: keeps out-of-range latents from blowing up the decoder while staying differentiable
    def forward(self, x):
        return torch.tanh(x / 3) * 3


class Block(nn.Module):
    def __init__(self, n, pool=False):
        super().__init__()
        self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
        # FLUX.2 variant: a cheap channel-mixing branch with GroupNorm near the latent, where the 32-channel
        # latent carries much more per-pixel information than SD's 4 channels
        self.pool = None
        if pool:
            self.pool = nn.Sequential(
                nn.Conv2d(n, 4 * n, 1, bias=False), nn.GroupNorm(4, 4 * n), nn.ReLU(), nn.Conv2d(4 * n, n, 1, bias=False)
            )
        self.fuse = nn.ReLU()

    def forward(self, x):
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + x)


def taesd_encoder(latent_channels=32, pool=True):
    """RGB in [0, 1] -> latent at 1/8 resolution. Flat Sequential so state-dict keys match upstream."""
    layers = [conv(3, 64), Block(64)]
    for i in range(3):
        last = i == 2
        layers += [conv(64, 64, stride=2, bias=False)] + [Block(64, pool=pool and last) for _ in range(3)]
    layers.append(conv(64, latent_channels))
    return nn.Sequential(*layers)


def taesd_decoder(latent_channels=32, pool=True):
    """Latent -> RGB (about [0, 1]); mirror of the encoder with nearest upsampling."""
    layers = [Clamp(), conv(latent_channels, 64), nn.ReLU()] + [Block(64, pool=pool) for _ in range(3)]
    for n_blocks in (3, 3, 1):
        layers += [nn.Upsample(scale_factor=2), conv(64, 64, bias=False)] + [Block(64) for _ in range(n_blocks)]
    layers.append(conv(64, 3))
    return nn.Sequential(*layers)


class TinyAutoencoder(nn.Module):
    def __init__(self, name="taef2", latent_channels=32, pool=True):
        super().__init__()
        self.name = name
        self.encoder = taesd_encoder(latent_channels, pool)
        self.decoder = taesd_decoder(latent_channels, pool)

    @classmethod
    def from_folder(cls, folder, **kwargs):
        """Loads `<name>_encoder.pth` / `<name>_decoder.pth` from a folder; the name is the folder's."""
        folder = Path(folder)
        model = cls(name=folder.name, **kwargs)
        for part in ("encoder", "decoder"):
            state = torch.load(folder / f"{folder.name}_{part}.pth", map_location="cpu", weights_only=True)
            # strict: a wrong architecture must fail here, not silently produce garbage images
            getattr(model, part).load_state_dict(state, strict=True)
        return model.eval()

    def forward(self, x, encoder_bf16=False):
        # encoder_bf16: the encoder only picks the content; the decoder, whose traces a detector learns, stays fp32
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=encoder_bf16):
            z = self.encoder(x)
        return self.decoder(z.float()).clamp(0, 1)


class DiffusersAutoencoder(nn.Module):
    """diffusers AutoencoderKL (SD-style VAE, [-1, 1] range) behind the same [0, 1] interface."""

    def __init__(self, vae, name):
        super().__init__()
        self.vae, self.name = vae, name

    def forward(self, x, encoder_bf16=False):
        # mode() not sample(): a deterministic reconstruction, so reruns give the same images
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=encoder_bf16):
            z = self.vae.encode(x * 2 - 1).latent_dist.mode()
        z = z.to(next(self.vae.parameters()).dtype)
        return ((self.vae.decode(z).sample + 1) / 2).clamp(0, 1)


def is_tiny_autoencoder_folder(path):
    path = Path(path)
    return path.is_dir() and all((path / f"{path.name}_{p}.pth").is_file() for p in ("encoder", "decoder"))


def load_autoencoder(name_or_path):
    """A TAESD-family folder (e.g. train/aligned/weights/taef2) or a diffusers AutoencoderKL Hub name / folder."""
    if is_tiny_autoencoder_folder(name_or_path):
        return TinyAutoencoder.from_folder(name_or_path)
    try:
        from diffusers import AutoencoderKL
    except ImportError as e:
        raise SystemExit(
            f"{name_or_path!r} is not a TAESD-style folder (<name>_encoder.pth + <name>_decoder.pth), and loading it "
            f"as a diffusers AutoencoderKL needs diffusers: pip install diffusers"
        ) from e
    try:
        vae = AutoencoderKL.from_pretrained(name_or_path)
    except Exception as e:  # noqa: BLE001 - hub/network/format errors all mean the same thing to the user
        raise SystemExit(
            f"could not load AutoencoderKL {name_or_path!r} (no such local folder, and the Hugging Face Hub could "
            f"not be reached or has no such repo): {e}"
        ) from e
    return DiffusersAutoencoder(vae.eval(), name=Path(str(name_or_path).rstrip("/")).name)
