"""Mapping table: diffusers `AutoencoderKL` state-dict keys -> our AutoencoderKL (NHWC)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.diffusion.vae import AutoencoderKL
from seedx_jax.weights import LoadReport, Rule, conv_kernel, load_weights, transpose


VAE_RULES: tuple[Rule, ...] = (
    Rule(r"(.*(?:norm\d?|group_norm|conv_norm_out))\.weight", r"\1.scale"),  # before the conv rule
    Rule(r"(.*conv\w*)\.weight", r"\1.kernel", conv_kernel),
    Rule(r"(.*(?:conv\w*|norm\d?|group_norm))\.bias", r"\1.bias"),
    # diffusers Attention (to_q/k/v, to_out.0) -> our MultiHeadAttention (q/k/v_proj, out_proj)
    Rule(r"(.*)\.to_(q|k|v)\.weight", r"\1.attn.\2_proj.kernel", transpose),
    Rule(r"(.*)\.to_(q|k|v)\.bias", r"\1.attn.\2_proj.bias"),
    Rule(r"(.*)\.to_out\.0\.weight", r"\1.attn.out_proj.kernel", transpose),
    Rule(r"(.*)\.to_out\.0\.bias", r"\1.attn.out_proj.bias"),
)


def load_vae(model: AutoencoderKL, tensors: Iterable[tuple[str, np.ndarray]], *, strict: bool = False) -> LoadReport:
    """From a diffusers `vae/` state dict (optionally prefixed `vae.`)."""
    return load_weights(model, tensors, VAE_RULES, strip_prefixes=("vae.",), strict=strict)
