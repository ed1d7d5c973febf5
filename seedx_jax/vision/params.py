"""Mapping tables: the Qwen-VL ViT file (`qwen_vit_G.pt`) and Resampler keys (docs/checkpoints.md).

A Qwen-VL-Chat checkpoint works too: its ViT keys carry the prefix `transformer.visual.` (see reload_qwen_vit.py).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.vision.resampler import Resampler
from seedx_jax.vision.vit import QwenViT
from seedx_jax.weights import (CONV_KERNEL, SPLIT_QKV, TRANSPOSE, LoadReport, Rule, dense_rules, load_weights,
                               norm_rules, prefixed, split_qkv_interleaved)

QWEN_VL_CHAT_PREFIX = "transformer.visual."


def _qkv_targets(prefix: str, leaf: str) -> tuple[str, str, str]:
    return tuple(f"{prefix}.{p}_proj.{leaf}" for p in "qkv")


def resampler_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """Rules for one torch `Resampler` at key prefix `src` into our module at `dst`."""
    return (
        Rule(src + "pos_embed", dst + "pos_embed"),
        Rule(src + "query", dst + "query"),
        Rule(src + "kv_proj.weight", dst + "kv_proj.kernel", TRANSPOSE),
        Rule(src + "attn.in_proj_weight", _qkv_targets(dst + "attn", "kernel"), SPLIT_QKV),
        Rule(src + "attn.in_proj_bias", _qkv_targets(dst + "attn", "bias"), SPLIT_QKV),
        *dense_rules(src + "attn.out_proj", dst + "attn.out_proj"),
        *norm_rules(src + "{ln:ln_q|ln_kv}", dst + "{ln}"),
    )


def vit_rules(heads: int) -> tuple[Rule, ...]:
    block = "transformer.resblocks.{i}."
    qkv = split_qkv_interleaved(heads)
    return prefixed((
        Rule("conv1.weight", "conv1", CONV_KERNEL),
        Rule("positional_embedding", "positional_embedding"),
        *norm_rules("ln_pre", "ln_pre"),
        *norm_rules(block + "{ln:ln_1|ln_2}", "resblocks.{i}.{ln}"),
        Rule(block + "attn.in_proj.weight", _qkv_targets("resblocks.{i}.attn", "kernel"), qkv),
        Rule(block + "attn.in_proj.bias", _qkv_targets("resblocks.{i}.attn", "bias"), qkv),
        *dense_rules(block + "attn.out_proj", "resblocks.{i}.attn.out_proj"),
        *dense_rules(block + "mlp.{fc:c_fc|c_proj}", "resblocks.{i}.{fc}"),
        *resampler_rules("attn_pool.", "attn_pool."),
        *norm_rules("ln_post", "ln_post"),
        Rule("proj", "proj"),  # used as x @ proj: already [in, out]
    ), f"[{QWEN_VL_CHAT_PREFIX}]", "")


def load_qwen_vit(model: QwenViT, tensors: Iterable[tuple[str, np.ndarray]], *,
                  strict: bool = False) -> LoadReport:
    """Load `qwen_vit_G.pt` or Qwen-VL-Chat tensors (a mapping, `(key, array)` pairs or a TensorSource).

    Raises:
      ValueError: `model` is not a `QwenViT`, `tensors` of another form, or the load report's problems
        (`load_weights`).
    """
    if not isinstance(model, QwenViT):
        raise ValueError(f"model must be a QwenViT, got {type(model).__name__}")
    return load_weights(model, tensors, vit_rules(model.config.heads), strict=strict)


def load_resampler(model: Resampler, tensors: Iterable[tuple[str, np.ndarray]], *, prefix: str = "",
                   strict: bool = False) -> LoadReport:
    """Load one Resampler whose torch keys start with `prefix` (e.g. "input_resampler.")."""
    return load_weights(model, tensors, resampler_rules(prefix, ""), strict=strict)
