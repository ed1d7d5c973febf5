"""The cross-attention `Resampler` (Qwen-VL's qwen_visual.py): ViT attention pool, MLLM input and output resamplers.

g*g learned queries attend to L = s*s input tokens. Queries get the fixed g x g sincos table, keys
the same table bicubic-resized to s x s, values none. No residual, no MLP.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.nn import Buffer, LayerNorm, Linear, MultiHeadAttention
from seedx_jax.vision.position_tables import resize_table, sincos_2d


@dataclasses.dataclass(frozen=True)
class ResamplerConfig(ConfigBase):
    grid_size: int  # g: g*g queries
    embed_dim: int  # E
    num_heads: int
    kv_dim: int  # K, input feature size (kv_proj only when K != E)
    eps: float = 1e-5  # LayerNorm eps: 1e-5 for the MLLM resamplers, 1e-6 inside the ViT
    dtype: str = "float32"
    param_dtype: str = "float32"
    attention_impl: str = "xla"

    def __post_init__(self):
        self.check_divisible("embed_dim", "num_heads")
        if self.embed_dim % 4:
            raise ValueError(f"ResamplerConfig.embed_dim={self.embed_dim} must be divisible by 4 "
                             "(2-D sincos table)")


# SEED-X's two MLLM-side instances (configs/clm_models/agent_seed_x*.yaml).
INPUT_RESAMPLER = ResamplerConfig(grid_size=8, embed_dim=5120, num_heads=32, kv_dim=4096)
OUTPUT_RESAMPLER = ResamplerConfig(grid_size=8, embed_dim=4096, num_heads=32, kv_dim=5120)


class Resampler(nnx.Module):
    def __init__(self, cfg: ResamplerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        g, e = cfg.grid_size, cfg.embed_dim
        dtype, pdtype = jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        self.pos_embed = Buffer(jnp.asarray(sincos_2d(e, g), pdtype), logical_axes=(None, "embed"))
        self.query = nnx.Param(
            0.02 * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, (g * g, e), pdtype),
            logical_axes=(None, "embed"))
        self.kv_proj = (Linear(cfg.kv_dim, e, logical_axes=("heads", "embed"), dtype=dtype,
                               param_dtype=pdtype, rngs=rngs) if cfg.kv_dim != e else None)
        self.attn = MultiHeadAttention(e, cfg.num_heads, dtype=dtype, param_dtype=pdtype,
                                       attention_impl=cfg.attention_impl, rngs=rngs)
        self.ln_q = LayerNorm(e, eps=cfg.eps, param_dtype=pdtype)
        self.ln_kv = LayerNorm(e, eps=cfg.eps, param_dtype=pdtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x `[N, L, kv_dim]` with L a square number -> `[N, g*g, embed_dim]`."""
        cfg = self.cfg
        n, length, k = x.shape
        side = math.isqrt(length)
        if side * side != length:
            raise ValueError(f"Resampler input has {length} tokens; it needs a square number")
        if k != cfg.kv_dim:
            raise ValueError(f"Resampler input feature size {k} != kv_dim={cfg.kv_dim}")
        dtype = jnp.dtype(cfg.dtype)
        g = cfg.grid_size
        key_pos = resize_table(self.pos_embed[...], (g, g), (side, side)).astype(dtype)
        x = x.astype(dtype)
        xv = self.ln_kv(self.kv_proj(x) if self.kv_proj is not None else x)
        queries = self.ln_q(self.query[...].astype(dtype)) + self.pos_embed[...].astype(dtype)
        queries = jnp.broadcast_to(queries, (n, g * g, cfg.embed_dim))
        return self.attn(queries, xv + key_pos, xv)
