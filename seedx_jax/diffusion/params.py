"""Mapping tables: diffusers `AutoencoderKL` and `UNet2DConditionModel` state-dict keys -> ours (NHWC)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.diffusion.unet import UNet2DConditionModel
from seedx_jax.diffusion.vae import AutoencoderKL
from seedx_jax.weights import LoadReport, Rule, conv_kernel, dense_rules, load_weights, norm_rules, transpose

_NORMS = norm_rules(r"(.*(?:norm\d?|group_norm|conv_norm_out))", r"\1")  # before the conv rules
_CONVS = (Rule(r"(.*conv\w*)\.weight", r"\1.kernel", conv_kernel), Rule(r"(.*conv\w*)\.bias", r"\1.bias"))


def _attention_rules(dst: str) -> tuple[Rule, ...]:
    """diffusers `Attention` (to_q/k/v, to_out.0) -> our MultiHeadAttention at `dst` (q/k/v_proj, out_proj)."""
    return (
        Rule(r"(.*)\.to_(q|k|v)\.weight", dst + r".\2_proj.kernel", transpose),
        Rule(r"(.*)\.to_(q|k|v)\.bias", dst + r".\2_proj.bias"),
        *dense_rules(r"(.*)\.to_out\.0", dst + ".out_proj"),
    )


VAE_RULES: tuple[Rule, ...] = (*_NORMS, *_CONVS, *_attention_rules(r"\1.attn"))

UNET_RULES: tuple[Rule, ...] = (
    *_NORMS,  # GroupNorms, the transformer blocks' LayerNorms norm1-3, conv_norm_out
    *_CONVS,  # conv_in/out, resnet conv1/conv2/conv_shortcut, down/upsampler convs
    *dense_rules(r"(.*(?:linear_\d|time_emb_proj|proj_in|proj_out))", r"\1"),
    *_attention_rules(r"\1"),  # attn1 (self) and attn2 (cross)
    *dense_rules(r"(.*)\.ff\.net\.0\.proj", r"\1.ff.proj"),  # GEGLU
    *dense_rules(r"(.*)\.ff\.net\.2", r"\1.ff.out"),
)


def load_vae(model: AutoencoderKL, tensors: Iterable[tuple[str, np.ndarray]], *, strict: bool = False) -> LoadReport:
    """From a diffusers `vae/` state dict (optionally prefixed `vae.`)."""
    return load_weights(model, tensors, VAE_RULES, strip_prefixes=("vae.",), strict=strict)


def load_unet(model: UNet2DConditionModel, tensors: Iterable[tuple[str, np.ndarray]], *,
              strict: bool = False) -> LoadReport:
    """From a diffusers `unet/` state dict, or the `unet.*` keys of a SEED-X de-tokenizer checkpoint.

    Other prefixed keys (`resampler.*`, `vae.*`) are skipped, so a whole de-tokenizer file can be passed.
    """
    tensors = ((k, v) for k, v in tensors if not k.startswith(("resampler.", "vae.")))
    return load_weights(model, tensors, UNET_RULES, strip_prefixes=("unet.",), strict=strict)
