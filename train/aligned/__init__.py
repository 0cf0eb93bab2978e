"""Aligned training data: `python -m train.aligned` (run.py) turns real photos into (crop, autoencoder
reconstruction) pairs; autoencoders.py wraps the bundled TAEF2 (weights/) and diffusers' AutoencoderKL."""
