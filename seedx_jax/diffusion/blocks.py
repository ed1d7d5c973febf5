"""Convolutional building blocks shared by the SDXL VAE and U-Net (diffusers semantics, NHWC)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn import Conv2d, GroupNorm, Linear, MultiHeadAttention


class ResnetBlock2D(nnx.Module):
    """norm1 -> silu -> conv1 (+ time_emb_proj(silu(temb))) -> norm2 -> silu -> conv2, plus a
    (1x1-conv) shortcut. The VAE's blocks have no time embedding (`temb_channels=None`)."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int, eps: float,
                 temb_channels: int | None = None, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = GroupNorm(groups, in_channels, eps=eps, param_dtype=param_dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, **kw)
        self.time_emb_proj = (None if temb_channels is None else
                              Linear(temb_channels, out_channels, logical_axes=("mlp", "embed"), use_bias=True, **kw))
        self.norm2 = GroupNorm(groups, out_channels, eps=eps, param_dtype=param_dtype)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, **kw)
        self.conv_shortcut = Conv2d(in_channels, out_channels, 1, **kw) if in_channels != out_channels else None

    def __call__(self, x: jax.Array, temb: jax.Array | None = None) -> jax.Array:
        """x `[N, H, W, in]`, temb `[N, temb_channels]` -> `[N, H, W, out]`."""
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(jax.nn.silu(temb))[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Downsample2D(nnx.Module):
    """3x3 stride-2 conv. `asymmetric`: pad only bottom/right by 1 (VAE encoder); else pad 1 all round."""

    def __init__(self, channels: int, *, asymmetric: bool, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        padding = ((0, 1), (0, 1)) if asymmetric else 1
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding, dtype=dtype,
                           param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(x)


class Upsample2D(nnx.Module):
    """Nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = Conv2d(channels, channels, 3, padding=1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class SpatialSelfAttention(nnx.Module):
    """The VAE mid-block attention: group_norm -> single-head self-attention over H*W, plus x."""

    def __init__(self, channels: int, *, groups: int, eps: float, dtype=jnp.float32, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.group_norm = GroupNorm(groups, channels, eps=eps, param_dtype=param_dtype)
        self.attn = MultiHeadAttention(channels, 1, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n, h, w, c = x.shape
        t = self.group_norm(x).reshape(n, h * w, c)
        return x + self.attn(t, t, t).reshape(n, h, w, c)
