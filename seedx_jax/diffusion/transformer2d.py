"""The U-Net's spatial transformer: self-attention, cross-attention to the prompt embeddings, GEGLU MLP.

diffusers `Transformer2DModel` with `use_linear_projection=True` (SDXL): GroupNorm (eps 1e-6) ->
proj_in (Linear) -> `num_layers` x BasicTransformerBlock -> proj_out -> + input. The blocks are
stacked and scanned (`scan=True`), so the 10-block SDXL levels compile once per level.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn import GroupNorm, LayerNorm, Linear, MultiHeadAttention, apply_layers, stack_layers


class GEGLUFeedForward(nnx.Module):
    """`net.0.proj` (dim -> 2 x inner; first half value, second half gate) -> value * gelu(gate) -> `net.2`."""

    def __init__(self, dim: int, inner: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(use_bias=True, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.proj = Linear(dim, 2 * inner, logical_axes=("embed", "mlp"), **kw)
        self.out = Linear(inner, dim, logical_axes=("mlp", "embed"), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        value, gate = jnp.split(self.proj(x), 2, axis=-1)
        return self.out(value * jax.nn.gelu(gate, approximate=False))


class BasicTransformerBlock(nnx.Module):
    """x += attn1(norm1 x); x += attn2(norm2 x, context); x += ff(norm3 x). q/k/v without bias."""

    def __init__(self, dim: int, heads: int, context_dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 attention_impl: str = "xla", rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        attn = dict(qkv_bias=False, attention_impl=attention_impl, **kw)
        self.norm1 = LayerNorm(dim, param_dtype=param_dtype)
        self.attn1 = MultiHeadAttention(dim, heads, **attn)
        self.norm2 = LayerNorm(dim, param_dtype=param_dtype)
        self.attn2 = MultiHeadAttention(dim, heads, kv_dim=context_dim, **attn)
        self.norm3 = LayerNorm(dim, param_dtype=param_dtype)
        self.ff = GEGLUFeedForward(dim, 4 * dim, **kw)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x `[N, HW, dim]`, context `[N, T, context_dim]` -> `[N, HW, dim]`."""
        h = self.norm1(x)
        x = x + self.attn1(h, h, h)
        h = self.norm2(x)
        x = x + self.attn2(h, context, context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nnx.Module):
    def __init__(self, channels: int, heads: int, num_layers: int, context_dim: int, *, groups: int,
                 scan: bool = True, dtype=jnp.float32, param_dtype=jnp.float32, attention_impl: str = "xla",
                 rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.scan = scan
        self.norm = GroupNorm(groups, channels, eps=1e-6, param_dtype=param_dtype)
        self.proj_in = Linear(channels, channels, logical_axes=("embed", "heads"), use_bias=True, **kw)

        def make(r):
            return BasicTransformerBlock(channels, heads, context_dim, dtype=dtype, param_dtype=param_dtype,
                                         attention_impl=attention_impl, rngs=r)

        self.transformer_blocks = (stack_layers(make, num_layers, rngs) if scan else
                                   nnx.List([make(rngs) for _ in range(num_layers)]))
        self.proj_out = Linear(channels, channels, logical_axes=("heads", "embed"), use_bias=True, **kw)

    def __call__(self, x: jax.Array, context: jax.Array) -> jax.Array:
        """x `[N, H, W, C]`, context `[N, T, context_dim]` -> `[N, H, W, C]`."""
        n, h, w, c = x.shape
        tokens = self.proj_in(self.norm(x).reshape(n, h * w, c))

        def step(block, t, _):
            return block(t, context), None

        tokens, _ = apply_layers(self.transformer_blocks, step, tokens, None, scan=self.scan)
        return x + self.proj_out(tokens).reshape(n, h, w, c)
