"""Mapping table: diffusers `AutoencoderKL` state-dict keys -> our AutoencoderKL (NHWC)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.diffusion.vae import AutoencoderKL
from seedx_jax.weights import LoadReport, Rule, load_weights, transpose


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight `[out, in, kh, kw]` -> HWIO."""
    return w.transpose(2, 3, 1, 0)


VAE_RULES: tuple[Rule, ...] = (
    Rule(r"(.*(?:norm\d?|group_norm|conv_norm_out))\.weight", r"\1.scale"),  # before the conv rule
    Rule(r"(.*conv\w*)\.weight", r"\1.kernel", conv_kernel),
    Rule(r"(.*(?:conv\w*|norm\d?|group_norm))\.bias", r"\1.bias"),
    Rule(r"(.*\.to_(?:q|k|v))\.weight", r"\1.kernel", transpose),
    Rule(r"(.*\.to_(?:q|k|v))\.bias", r"\1.bias"),
    Rule(r"(.*\.to_out)\.0\.weight", r"\1.kernel", transpose),
    Rule(r"(.*\.to_out)\.0\.bias", r"\1.bias"),
)


def load_vae(model: AutoencoderKL, tensors: Iterable[tuple[str, np.ndarray]], *, strict: bool = False) -> LoadReport:
    """From a diffusers `vae/` state dict (optionally prefixed `vae.`)."""
    return load_weights(model, tensors, VAE_RULES, strip_prefixes=("vae.",), strict=strict)
