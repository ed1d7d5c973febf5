"""Mapping tables: diffusers `AutoencoderKL` and `UNet2DConditionModel` state-dict keys <-> ours (NHWC)."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.diffusion.unet import UNet2DConditionModel
from seedx_jax.diffusion.vae import AutoencoderKL
from seedx_jax.weights import CONV_KERNEL, TRANSPOSE, LoadReport, Rule, dense_rules, load_weights, norm_rules, prefixed

_NORMS = norm_rules(r"{norm:.*(?:norm\d?|group_norm|conv_norm_out)}", "{norm}")  # before the conv rules
_CONVS = (Rule(r"{conv:.*conv\w*}.weight", "{conv}.kernel", CONV_KERNEL), Rule(r"{conv:.*conv\w*}.bias", "{conv}.bias"))


def _attention_rules(dst: str) -> tuple[Rule, ...]:
    """diffusers `Attention` (to_q/k/v, to_out.0) -> our MultiHeadAttention at `dst` (q/k/v_proj, out_proj)."""
    return (
        Rule("{path:.*}.to_{x:q|k|v}.weight", dst + ".{x}_proj.kernel", TRANSPOSE),
        Rule("{path:.*}.to_{x:q|k|v}.bias", dst + ".{x}_proj.bias"),
        *dense_rules("{path:.*}.to_out.0", dst + ".out_proj"),
    )


VAE_RULES: tuple[Rule, ...] = (*_NORMS, *_CONVS, *_attention_rules("{path}.attn"))

UNET_RULES: tuple[Rule, ...] = (
    *_NORMS,  # GroupNorms, the transformer blocks' LayerNorms norm1-3, conv_norm_out
    *_CONVS,  # conv_in/out, resnet conv1/conv2/conv_shortcut, down/upsampler convs
    *dense_rules(r"{linear:.*(?:linear_\d|time_emb_proj|proj_in|proj_out)}", "{linear}"),
    *_attention_rules("{path}"),  # attn1 (self) and attn2 (cross)
    *dense_rules("{path:.*}.ff.net.0.proj", "{path}.ff.proj"),  # GEGLU
    *dense_rules("{path:.*}.ff.net.2", "{path}.ff.out"),
)


def load_vae(model: AutoencoderKL, tensors: Iterable[tuple[str, np.ndarray]], *, strict: bool = False) -> LoadReport:
    """From a diffusers `vae/` state dict (optionally prefixed `vae.`)."""
    return load_weights(model, tensors, prefixed(VAE_RULES, "[vae.]", ""), strict=strict)


def load_unet(model: UNet2DConditionModel, tensors: Iterable[tuple[str, np.ndarray]], *,
              strict: bool = False) -> LoadReport:
    """From a diffusers `unet/` state dict, or the `unet.*` keys of a SEED-X de-tokenizer checkpoint.

    Other prefixed keys (`resampler.*`, `vae.*`) are skipped, so a whole de-tokenizer file can be passed.
    """
    tensors = ((k, v) for k, v in tensors if not k.startswith(("resampler.", "vae.")))
    return load_weights(model, tensors, prefixed(UNET_RULES, "[unet.]", ""), strict=strict)
