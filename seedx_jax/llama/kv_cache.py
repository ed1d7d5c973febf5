"""Fixed-size KV cache for prefill + single-token decode inside `lax.while_loop`."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from seedx_jax.llama.config import LlamaConfig

# Logical axes of a stacked cache.k / cache.v, for the sharding rules table.
KV_CACHE_AXES = ("layers", "batch", "act_kv_heads", "cache_seq", "head_dim")


class KVCache(NamedTuple):
    """k, v in one of two layouts, one per model layout (`init` and `LlamaForCausalLM.prefill` pick it from
    `scan_layers`):

    - stacked (scanned model): arrays `[layers, B, kv_heads, max_len, head_dim]`; the scan reads layer i's
      slice in place and the step writes every layer's new slots after the scan.
    - per layer (unscanned model): tuples of one buffer `[B * kv_heads, max_len, head_dim]` per layer, (batch,
      kv head) flattened row-major. Each layer writes its buffer and then reads it, so XLA updates every
      donated buffer in place: slicing a stacked array outside a loop, or reading a cache before writing it
      in the same program, makes XLA:CPU copy whole caches (and a `[B, kv_heads, ...]` buffer with B = 1 too).

    Heads come before slots in both: the layout of attention's batched matmuls, so no cache is transposed.
    Slot j holds the key/value of the token at position j. A model call with positions P `[B, T]`
    attends, in row b, to the slots below min(P[b]) plus its own T tokens (causally by position),
    and writes its keys/values to slots P (positions >= max_len are dropped). So right-padded rows stay
    correct: a row's pad slots lie at or above its next position and are overwritten before any query can
    see them.
    """

    k: jax.Array | tuple[jax.Array, ...]
    v: jax.Array | tuple[jax.Array, ...]

    @property
    def stacked(self) -> bool:
        return not isinstance(self.k, tuple)

    @property
    def max_len(self) -> int:
        return (self.k if self.stacked else self.k[0]).shape[-2]

    def batch_size(self, num_key_value_heads: int) -> int:
        return self.k.shape[1] if self.stacked else self.k[0].shape[0] // num_key_value_heads

    @classmethod
    def init(cls, cfg: LlamaConfig, batch_size: int, max_len: int, dtype=None) -> "KVCache":
        """An empty cache, stacked if `cfg.scan_layers`, else one buffer per layer."""
        dtype = cfg.compute_dtype if dtype is None else dtype
        k, s, h = cfg.num_key_value_heads, max_len, cfg.head_dim
        if cfg.scan_layers:
            return cls(*(jnp.zeros((cfg.num_hidden_layers, batch_size, k, s, h), dtype) for _ in range(2)))
        return cls(*(tuple(jnp.zeros((batch_size * k, s, h), dtype) for _ in range(cfg.num_hidden_layers))
                     for _ in range(2)))

    @classmethod
    def from_prompt(cls, k: jax.Array, v: jax.Array, max_len: int, *, stacked: bool) -> "KVCache":
        """k, v `[layers, B, T, kv_heads, head_dim]` of positions 0..T-1 -> a cache of max_len >= T slots.

        Raises:
          ValueError: max_len < T.
        """
        layers, b, t, heads, h = k.shape
        if max_len < t:
            raise ValueError(f"max_len={max_len} is shorter than the prompt ({t} tokens)")
        pad = [(0, 0), (0, 0), (0, 0), (0, max_len - t), (0, 0)]
        k, v = (jnp.pad(x.transpose(0, 1, 3, 2, 4), pad) for x in (k, v))
        if stacked:
            return cls(k, v)
        return cls(*(tuple(x.reshape(layers, b * heads, max_len, h)) for x in (k, v)))

    def write(self, k: jax.Array, v: jax.Array, positions: jax.Array) -> "KVCache":
        """A stacked cache with k, v `[layers, B, T, kv_heads, head_dim]` of the tokens at positions `[B, T]`
        written to their slots. Only T slots per row are written: under buffer donation or as a `while_loop`
        carry, XLA updates the cache in place. (Per-layer buffers: `write_rows`, layer by layer.)"""
        rows = jnp.arange(k.shape[1])[:, None]

        def put(cache, new):  # the indexed dims [B, T] lead the update: [B, T, layers, kv_heads, head_dim]
            return cache.at[:, rows, :, positions].set(new.transpose(1, 2, 0, 3, 4).astype(cache.dtype), mode="drop")

        return KVCache(put(self.k, k), put(self.v, v))


def write_rows(buffer: jax.Array, new: jax.Array, positions: jax.Array) -> jax.Array:
    """One layer's per-layer buffer `[B * kv_heads, max_len, head_dim]` with new `[B, T, kv_heads, head_dim]`
    written at slots `positions` `[B, T]` (positions >= max_len are dropped).

    A single token per row is one dynamic-update-slice per row: XLA updates those in place and its cost
    analysis counts only the slot (a scatter with B > 1 is counted as the whole buffer, read and written).
    """
    b, t, heads, h = new.shape
    new = new.astype(buffer.dtype)
    if t > 1:
        rows = (jnp.arange(b)[:, None] * heads + jnp.arange(heads))[:, None, :]  # [B, 1, K]
        return buffer.at[rows, positions[:, :, None]].set(new, mode="drop")
    zero = jnp.zeros((), positions.dtype)
    for row in range(b):
        start = (jnp.asarray(row * heads, positions.dtype), positions[row, 0], zero)
        update = new[row].transpose(1, 0, 2)  # [K, 1, H]
        # dynamic_update_slice clamps its start: keep the slot's old value for a position past the end.
        old = jax.lax.dynamic_slice(buffer, start, update.shape)
        buffer = jax.lax.dynamic_update_slice(buffer, jnp.where(positions[row, 0] < buffer.shape[1], update, old),
                                              start)
    return buffer
