"""Timestep embeddings of the U-Net: sinusoidal features and the two-layer MLP on top (diffusers)."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn import Linear


def timestep_features(t: jax.Array, dim: int, *, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                      max_period: float = 10000.0) -> jax.Array:
    """t `[N]` (float timesteps or SDXL size/crop ids) -> `[N, dim]` float32 [cos | sin] features.

    diffusers `get_timestep_embedding`: frequencies exp(-ln(max_period) * i / (dim/2 - shift)).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift))
    args = t.astype(jnp.float32)[:, None] * freqs[None, :]
    sin, cos = jnp.sin(args), jnp.cos(args)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class TimestepEmbedding(nnx.Module):
    """linear_1 -> silu -> linear_2."""

    def __init__(self, in_features: int, out_features: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.linear_1 = Linear(in_features, out_features, logical_axes=("embed", "mlp"), **kw)
        self.linear_2 = Linear(out_features, out_features, logical_axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x `[N, in_features]` -> `[N, out_features]`."""
        return self.linear_2(jax.nn.silu(self.linear_1(x)))
