"""Fixed-size KV cache for prefill + single-token decode inside `lax.while_loop`."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seedx_jax.llama.config import LlamaConfig

# Logical axes of cache.k / cache.v, for the sharding rules table.
KV_CACHE_AXES = ("layers", "batch", "cache_seq", "act_kv_heads", "head_dim")


class KVCache(NamedTuple):
    """k, v `[layers, B, max_len, kv_heads, head_dim]`.

    Slot j holds the key/value of the token at position j. Writes go to the slots named by the
    positions passed to the model; a query at position p attends to slots 0..p, so right-padded
    rows stay correct (their pad slots are overwritten before any query can see them).
    """

    k: jax.Array
    v: jax.Array

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    @classmethod
    def init(cls, cfg: LlamaConfig, batch_size: int, max_len: int, dtype=None) -> "KVCache":
        shape = (cfg.num_hidden_layers, batch_size, max_len, cfg.num_key_value_heads, cfg.head_dim)
        dtype = cfg.compute_dtype if dtype is None else dtype
        return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))
