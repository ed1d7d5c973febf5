"""Normalisation layers."""
import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """LLaMA RMSNorm as transformers 4.30 (the version SEED-X trained with, docs/llm.md).

    Normalisation and the multiplication by the weight both run in float32, with a single cast back
    to the input dtype at the end (transformers 5 casts before the multiply; equal in fp32).
    """

    def __init__(self, features: int, *, eps: float = 1e-5, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), logical_axes=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (self.scale[...].astype(jnp.float32) * y).astype(x.dtype)


def _affine(y: jax.Array, scale: nnx.Param, bias: nnx.Param, dtype) -> jax.Array:
    """`y * scale + bias` in float32, cast once to `dtype`."""
    return (y * scale[...].astype(jnp.float32) + bias[...].astype(jnp.float32)).astype(dtype)


class LayerNorm(nnx.Module):
    """torch `nn.LayerNorm` (affine): statistics in float32, result in the input dtype."""

    def __init__(self, features: int, *, eps: float = 1e-5, param_dtype=jnp.float32):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((features,), param_dtype), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((features,), param_dtype), logical_axes=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return _affine(y, self.scale, self.bias, x.dtype)


class GroupNorm(nnx.Module):
    """torch `nn.GroupNorm` on NHWC input (channels last); statistics in float32."""

    def __init__(self, num_groups: int, channels: int, *, eps: float = 1e-5, param_dtype=jnp.float32):
        if channels % num_groups:
            raise ValueError(f"GroupNorm: channels={channels} is not divisible by num_groups={num_groups}")
        self.num_groups, self.eps = num_groups, eps
        self.scale = nnx.Param(jnp.ones((channels,), param_dtype), logical_axes=("norm",))
        self.bias = nnx.Param(jnp.zeros((channels,), param_dtype), logical_axes=("norm",))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x `[N, ..., C]` -> same shape and dtype."""
        shape = x.shape
        g = x.astype(jnp.float32).reshape(shape[0], -1, self.num_groups, shape[-1] // self.num_groups)
        mean = g.mean(axis=(1, 3), keepdims=True)
        var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
        y = ((g - mean) * jax.lax.rsqrt(var + self.eps)).reshape(shape)
        return _affine(y, self.scale, self.bias, x.dtype)
