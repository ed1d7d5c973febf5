"""Normalisation layers."""
import jax
import jax.numpy as jnp
from flax import nnx


class RMSNorm(nnx.Module):
    """LLaMA RMSNorm as transformers 4.30 (the version SEED-X trained with, SEEDX.md §6.2).

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
        return (y * self.scale[...].astype(jnp.float32) + self.bias[...].astype(jnp.float32)).astype(x.dtype)
