"""Multi-head attention with separate q/k/v inputs and biased projections (torch MHA semantics).

Used by the ViT blocks and every `Resampler`. The converters split torch's packed `in_proj`
(`[q; k; v]`, or Qwen's head-interleaved layout) into `q_proj` / `k_proj` / `v_proj`.
"""
import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn.attention import attention
from seedx_jax.nn.linear import Linear


class MultiHeadAttention(nnx.Module):
    def __init__(self, embed_dim: int, num_heads: int, *, dtype=jnp.float32, param_dtype=jnp.float32,
                 attention_impl: str = "xla", rngs: nnx.Rngs):
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.attention_impl = attention_impl

        def proj(axes):
            return Linear(embed_dim, embed_dim, logical_axes=axes, use_bias=True, dtype=dtype,
                          param_dtype=param_dtype, rngs=rngs)

        self.q_proj = proj(("embed", "heads"))
        self.k_proj = proj(("embed", "heads"))
        self.v_proj = proj(("embed", "heads"))
        self.out_proj = proj(("heads", "embed"))

    def __call__(self, query: jax.Array, key: jax.Array, value: jax.Array) -> jax.Array:
        """query `[B, Tq, E]`, key/value `[B, Tk, E]` -> `[B, Tq, E]` (no mask)."""
        b, tq, e = query.shape
        tk = key.shape[1]
        h = self.num_heads
        q = self.q_proj(query).reshape(b, tq, h, e // h)
        k = self.k_proj(key).reshape(b, tk, h, e // h)
        v = self.v_proj(value).reshape(b, tk, h, e // h)
        out = attention(q, k, v, impl=self.attention_impl)
        return self.out_proj(out.reshape(b, tq, e))
