"""Multi-head attention with separate q/k/v inputs (torch MHA and diffusers `Attention` semantics).

Used by the ViT blocks, every `Resampler`, the VAE and the U-Net. The converters split torch's packed
`in_proj` (`[q; k; v]`, or Qwen's head-interleaved layout) into `q_proj` / `k_proj` / `v_proj`;
diffusers' `to_q/to_k/to_v/to_out.0` map one to one.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn.attention import attention
from seedx_jax.nn.linear import Linear


class MultiHeadAttention(nnx.Module):
    def __init__(self, embed_dim: int, num_heads: int, *, kv_dim: int | None = None, qkv_bias: bool = True,
                 dtype=jnp.float32, param_dtype=jnp.float32, attention_impl: str = "xla", rngs: nnx.Rngs):
        """`kv_dim`: width of the key/value input (cross-attention), default `embed_dim`.
        `qkv_bias`: biases on q/k/v (the output projection always has one)."""
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention_impl = attention_impl

        def proj(din, axes, bias):
            return Linear(din, embed_dim, logical_axes=axes, use_bias=bias, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

        kv_dim = embed_dim if kv_dim is None else kv_dim
        self.q_proj = proj(embed_dim, ("embed", "heads"), qkv_bias)
        self.k_proj = proj(kv_dim, ("embed", "heads"), qkv_bias)
        self.v_proj = proj(kv_dim, ("embed", "heads"), qkv_bias)
        self.out_proj = proj(embed_dim, ("heads", "embed"), True)

    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
        """query `[B, Tq, E]`, key/value `[B, Tk, kv_dim]` -> `[B, Tq, E]` (no mask)."""
        b, tq, e = query.shape
        tk = key.shape[1]
        h = self.num_heads
        q = self.q_proj(query).reshape(b, tq, h, e // h)
        k = self.k_proj(key).reshape(b, tk, h, e // h)
        v = self.v_proj(value).reshape(b, tk, h, e // h)
        out = attention(q, k, v, impl=self.attention_impl)
        return self.out_proj(out.reshape(b, tq, e))
