"""Mapping tables: the de-tokenizer checkpoints (`resampler.*` + `unet.*`, docs/checkpoints.md) over the
SDXL base `unet/` and `vae/` folders <-> Detokenizer."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.detokenizer.model import Detokenizer
from seedx_jax.detokenizer.resampler_xl import ResamplerXL
from seedx_jax.diffusion.params import UNET_RULES, VAE_RULES
from seedx_jax.sources import Overlay, Renamed
from seedx_jax.weights import (TRANSPOSE, LoadReport, Rule, dense_rules, load_weights, norm_rules, prefixed,
                               tensor_source)

_LAYER = "layers.{i}."

RESAMPLER_XL_RULES: tuple[Rule, ...] = (
    Rule("latents", "latents"),
    *dense_rules("proj_in", "proj_in"),
    *norm_rules(_LAYER + "0.{norm:norm1|norm2}", "layers.{i}.attn.{norm}"),
    Rule(_LAYER + "0.{proj:to_q|to_kv|to_out}.weight", "layers.{i}.attn.{proj}.kernel", TRANSPOSE),
    *norm_rules(_LAYER + "1.0", "layers.{i}.ff.norm"),  # FeedForward = Sequential(LN, Linear, GELU, Linear)
    Rule(_LAYER + "1.1.weight", "layers.{i}.ff.fc1.kernel", TRANSPOSE),
    Rule(_LAYER + "1.3.weight", "layers.{i}.ff.fc2.kernel", TRANSPOSE),
    *norm_rules("norm_out", "norm_out"),
    *dense_rules("{proj:unet_proj_1|unet_proj_2}", "{proj}"),
    Rule("unet_attnpool.positional_embedding", "unet_attnpool.positional_embedding"),
    *dense_rules("unet_attnpool.{proj:q_proj|k_proj|v_proj|c_proj}", "unet_attnpool.{proj}"),
)

DETOKENIZER_RULES: tuple[Rule, ...] = (
    *prefixed(RESAMPLER_XL_RULES, "resampler.", "resampler."),
    *prefixed(UNET_RULES, "unet.", "unet."),
    *prefixed(VAE_RULES, "vae.", "vae."),
)


def detokenizer_source(checkpoint, sdxl_unet=None, sdxl_vae=None):
    """The SEED-X checkpoint over the SDXL `unet/` and `vae/` tensors (prefixed `unet.` / `vae.`):
    checkpoint keys win (stage 2's 8-channel `unet.conv_in.weight` hides the base 4-channel one).
    Each is a TensorSource, a mapping or `(key, array)` pairs (`weights.tensor_source`, whose
    ValueError names the argument)."""
    base = [Renamed(tensor_source(s, name), add=p)
            for s, p, name in ((sdxl_unet, "unet.", "sdxl_unet"), (sdxl_vae, "vae.", "sdxl_vae")) if s is not None]
    return Overlay(*base, tensor_source(checkpoint, "checkpoint"))


def load_resampler_xl(model: ResamplerXL, tensors: Iterable[tuple[str, np.ndarray]], *,
                      strict: bool = False) -> LoadReport:
    """Load from a de-tokenizer checkpoint (keys `resampler.*`; `unet.*` keys are not this table's);
    `tensors` as `load_weights` takes them."""
    source = tensor_source(tensors)
    tensors = ((k, source.read(k)) for k in source.keys() if not k.startswith("unet."))
    return load_weights(model, tensors, prefixed(RESAMPLER_XL_RULES, "[resampler.]", ""), strict=strict)


def load_detokenizer(model: Detokenizer, sdxl_unet, sdxl_vae, checkpoint, *, strict: bool = True) -> LoadReport:
    """SDXL base U-Net and VAE, then the SEED-X checkpoint (`resampler.*`, and `unet.*` keys that
    override the base weights of the same name, as the official non-strict load) into a `Detokenizer`.
    Each source is a TensorSource, a mapping or `(key, array)` pairs; `sdxl_unet` / `sdxl_vae` may be
    None (a checkpoint holding every key).

    Raises:
      ValueError: `model` is not a `Detokenizer`, a source of another form (naming it), or the
        load report's problems (shape mismatches, missing or with `strict` unmatched keys).
    """
    if not isinstance(model, Detokenizer):
        raise ValueError(f"model must be a Detokenizer, got {type(model).__name__}")
    return load_weights(model, detokenizer_source(checkpoint, sdxl_unet, sdxl_vae), DETOKENIZER_RULES, strict=strict)
