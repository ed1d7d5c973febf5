"""Mapping tables: the Qwen-VL ViT file (`qwen_vit_G.pt`, SEEDX.md §3.5) and Resampler keys (§4.4).

A Qwen-VL-Chat checkpoint works too: its ViT keys carry the prefix `transformer.visual.` (§3.6).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from seedx_jax.vision.resampler import Resampler
from seedx_jax.vision.vit import QwenViT
from seedx_jax.weights import LoadReport, Rule, conv_kernel, dense_rules, load_weights, norm_rules, transpose

QWEN_VL_CHAT_PREFIX = "transformer.visual."


def split_qkv(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """torch MHA `in_proj` `[3E, ...]` = [q; k; v] -> three kernels (transposed) or biases."""
    return tuple(part.T for part in np.split(packed, 3, axis=0))


def split_qkv_interleaved(heads: int):
    """Qwen `VisualAttention.in_proj`: rows grouped per head as [q_h; k_h; v_h] (SEEDX.md §3.3)."""

    def split(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = packed.shape[0] // 3
        grouped = packed.reshape(heads, 3, width // heads, *packed.shape[1:])
        return tuple(grouped[:, i].reshape(width, *packed.shape[1:]).T for i in range(3))

    return split


def _qkv_targets(prefix: str, leaf: str) -> tuple[str, str, str]:
    return tuple(f"{prefix}.{p}_proj.{leaf}" for p in "qkv")


def resampler_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """Rules for one torch `Resampler` at key prefix `src` (regex) into our module at `dst`."""
    return (
        Rule(src + r"pos_embed", f"{dst}pos_embed"),
        Rule(src + r"query", f"{dst}query"),
        Rule(src + r"kv_proj\.weight", f"{dst}kv_proj.kernel", transpose),
        Rule(src + r"attn\.in_proj_weight", _qkv_targets(f"{dst}attn", "kernel"), split_qkv),
        Rule(src + r"attn\.in_proj_bias", _qkv_targets(f"{dst}attn", "bias"), split_qkv),
        *dense_rules(src + r"attn\.out_proj", f"{dst}attn.out_proj"),
        *norm_rules(src + r"(ln_q|ln_kv)", dst + r"\1"),
    )


def vit_rules(heads: int) -> tuple[Rule, ...]:
    block = r"transformer\.resblocks\.(\d+)\."
    return (
        Rule(r"conv1\.weight", "conv1", conv_kernel),
        Rule(r"positional_embedding", "positional_embedding"),
        *norm_rules(r"ln_pre", "ln_pre"),
        *norm_rules(block + r"(ln_1|ln_2)", r"resblocks.\1.\2"),
        Rule(block + r"attn\.in_proj\.weight", _qkv_targets(r"resblocks.\1.attn", "kernel"),
             split_qkv_interleaved(heads)),
        Rule(block + r"attn\.in_proj\.bias", _qkv_targets(r"resblocks.\1.attn", "bias"),
             split_qkv_interleaved(heads)),
        *dense_rules(block + r"attn\.out_proj", r"resblocks.\1.attn.out_proj"),
        *dense_rules(block + r"mlp\.(c_fc|c_proj)", r"resblocks.\1.\2"),
        *resampler_rules(r"attn_pool\.", "attn_pool."),
        *norm_rules(r"ln_post", "ln_post"),
        Rule(r"proj", "proj"),  # used as x @ proj: already [in, out]
    )


def load_qwen_vit(model: QwenViT, tensors: Iterable[tuple[str, np.ndarray]], *,
                  strict: bool = False) -> LoadReport:
    return load_weights(model, tensors, vit_rules(model.config.heads),
                        strip_prefixes=(QWEN_VL_CHAT_PREFIX,), strict=strict)


def load_resampler(model: Resampler, tensors: Iterable[tuple[str, np.ndarray]], *, prefix: str = "",
                   strict: bool = False) -> LoadReport:
    """Load one Resampler whose torch keys start with `prefix` (e.g. "input_resampler.")."""
    return load_weights(model, tensors, resampler_rules("", ""), strip_prefixes=(prefix,), strict=strict)
