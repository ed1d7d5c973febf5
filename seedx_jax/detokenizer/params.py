"""Mapping table: `resampler.*` keys of the de-tokenizer checkpoints (SEEDX.md §10.2) -> ResamplerXL."""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.detokenizer.resampler_xl import ResamplerXL
from seedx_jax.weights import LoadReport, Rule, dense_rules, load_weights, norm_rules, transpose

_LAYER = r"layers\.(\d+)\."


RESAMPLER_XL_RULES: tuple[Rule, ...] = (
    Rule(r"latents", "latents"),
    *dense_rules(r"proj_in", "proj_in"),
    *norm_rules(_LAYER + r"0\.(norm1|norm2)", r"layers.\1.attn.\2"),
    Rule(_LAYER + r"0\.(to_q|to_kv|to_out)\.weight", r"layers.\1.attn.\2.kernel", transpose),
    *norm_rules(_LAYER + r"1\.0", r"layers.\1.ff.norm"),  # FeedForward = Sequential(LN, Linear, GELU, Linear)
    Rule(_LAYER + r"1\.1\.weight", r"layers.\1.ff.fc1.kernel", transpose),
    Rule(_LAYER + r"1\.3\.weight", r"layers.\1.ff.fc2.kernel", transpose),
    *norm_rules(r"norm_out", "norm_out"),
    *dense_rules(r"(unet_proj_1|unet_proj_2)", r"\1"),
    Rule(r"unet_attnpool\.positional_embedding", "unet_attnpool.positional_embedding"),
    *dense_rules(r"unet_attnpool\.(q_proj|k_proj|v_proj|c_proj)", r"unet_attnpool.\1"),
)


def load_resampler_xl(model: ResamplerXL, tensors: Iterable[tuple[str, np.ndarray]], *,
                      strict: bool = False) -> LoadReport:
    """Load from a de-tokenizer checkpoint (keys `resampler.*`; `unet.*` keys are not this table's)."""
    tensors = ((k, v) for k, v in tensors if not k.startswith("unet."))
    return load_weights(model, tensors, RESAMPLER_XL_RULES, strip_prefixes=("resampler.",), strict=strict)
