"""Llama-2 decoder (pre-norm, RoPE, SwiGLU, MHA/GQA) in Flax NNX, HF parameter names.

Parameter paths mirror the Hugging Face module names (`layers.self_attn.q_proj.kernel`, ...) so
the conversion table reads one-to-one. With `scan_layers` the layers are one stacked module run
by `lax.scan`; otherwise an `nnx.List`.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.llama.config import LlamaConfig
from seedx_jax.llama.kv_cache import KVCache, write_rows
from seedx_jax.nn import Embedding, Linear, RMSNorm, apply_layers, apply_rope, attention, rope_cos_sin, stack_layers
from seedx_jax.nn.attention import attention_with_prefix
from seedx_jax.sharding import check_batch_divisible, shard_activation


class LlamaOutput(NamedTuple):
    logits: jax.Array | None  # [B, T, vocab] (None with return_logits=False)
    hidden_states: jax.Array  # [B, T, D], after the final RMSNorm (what SEED-X regresses from)
    cache: KVCache | None


def _linear(cfg: LlamaConfig, name: str, din: int, dout: int, axes: tuple[str, str], rngs):
    return Linear(din, dout, logical_axes=axes, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
                  lora=cfg.lora.spec_for(name) if cfg.lora else None, rngs=rngs)


def _split_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    return [None] * n if key is None else list(jax.random.split(key, n))


class LlamaAttention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = _linear(cfg, "q_proj", d, n * h, ("embed", "heads"), rngs)
        self.k_proj = _linear(cfg, "k_proj", d, k * h, ("embed", "kv_heads"), rngs)
        self.v_proj = _linear(cfg, "v_proj", d, k * h, ("embed", "kv_heads"), rngs)
        self.o_proj = _linear(cfg, "o_proj", n * h, d, ("heads", "embed"), rngs)

    def __call__(self, x, cos, sin, positions, cache, dropout_rng, *, update_cache: bool = False):
        """x `[B, T, D]` at positions `[B, T]`; cache None (causal over x) or one layer's (k, v) `[B * K, S, H]`
        (see `KVCache`), of which the slots below each row's first position are read -> (out `[B, T, D]`, kv).

        kv: the new (k, v) `[B, T, K, H]` for the caller to store, or with `update_cache` the cache buffers with
        them written at `positions`. Writing first makes the reads depend on the write, so XLA updates a donated
        buffer in place (the slots written lie at or above the first position: never read here)."""
        cfg = self.cfg
        b, t, _ = x.shape
        keys = _split_keys(dropout_rng, 4)
        q = self.q_proj(x, keys[0]).reshape(b, t, cfg.num_attention_heads, cfg.head_dim)
        k = self.k_proj(x, keys[1]).reshape(b, t, cfg.num_key_value_heads, cfg.head_dim)
        v = self.v_proj(x, keys[2]).reshape(b, t, cfg.num_key_value_heads, cfg.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = shard_activation(q, ("batch", "seq", "act_heads", "head_dim"))
        if cache is None:
            out = attention(q, k, v, is_causal=True, impl=cfg.attention_impl)
        else:
            cache_k, cache_v = cache
            if update_cache:
                cache_k, cache_v = write_rows(cache_k, k, positions), write_rows(cache_v, v, positions)
            slots = jnp.arange(cache_k.shape[1])
            prefix_mask = slots[None, None, None, :] < positions.min(axis=1)[:, None, None, None]  # [B, 1, 1, S]
            mask = positions[:, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, T]
            out = attention_with_prefix(q, k, v, cache_k.astype(q.dtype), cache_v.astype(q.dtype), mask=mask,
                                        prefix_mask=prefix_mask)
        out = out.reshape(b, t, cfg.num_attention_heads * cfg.head_dim)
        return self.o_proj(out, keys[3]), ((cache_k, cache_v) if update_cache else (k, v))


class LlamaMLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.gate_proj = _linear(cfg, "gate_proj", d, f, ("embed", "mlp"), rngs)
        self.up_proj = _linear(cfg, "up_proj", d, f, ("embed", "mlp"), rngs)
        self.down_proj = _linear(cfg, "down_proj", f, d, ("mlp", "embed"), rngs)

    def __call__(self, x, dropout_rng):
        keys = _split_keys(dropout_rng, 3)
        h = jax.nn.silu(self.gate_proj(x, keys[0])) * self.up_proj(x, keys[1])
        h = shard_activation(h, ("batch", "seq", "act_mlp"))
        return self.down_proj(h, keys[2])


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=cfg.params_dtype)
        self.self_attn = LlamaAttention(cfg, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps,
                                                param_dtype=cfg.params_dtype)
        self.mlp = LlamaMLP(cfg, rngs=rngs)

    def __call__(self, x, cos, sin, positions, cache, dropout_rng, *, update_cache: bool = False):
        """-> (out `[B, T, D]`, kv): see `LlamaAttention`."""
        attn_key, mlp_key = _split_keys(dropout_rng, 2)
        attn_out, new_kv = self.self_attn(self.input_layernorm(x), cos, sin, positions, cache, attn_key,
                                          update_cache=update_cache)
        h = x + attn_out
        out = h + self.mlp(self.post_attention_layernorm(h), mlp_key)
        return shard_activation(out, ("batch", "seq", "act_embed")), new_kv


def check_token_ids(ids, vocab_size: int, name: str = "input_ids") -> None:
    """Host-side range check (skipped for traced ids): ids must lie in [0, vocab_size)."""
    if isinstance(ids, jax.core.Tracer):
        return
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} holds ids in [{ids.min()}, {ids.max()}] but vocab_size={vocab_size}")


class LlamaForCausalLM(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size, dtype=cfg.compute_dtype,
                                      param_dtype=cfg.params_dtype, rngs=rngs)
        make_layer = functools.partial(LlamaDecoderLayer, cfg)
        if cfg.scan_layers:
            self.layers = stack_layers(lambda r: make_layer(rngs=r), cfg.num_hidden_layers, rngs)
        else:
            self.layers = nnx.List([make_layer(rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps, param_dtype=cfg.params_dtype)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, logical_axes=("embed", "vocab"),
                              dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)

    def __call__(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
                 positions: jax.Array | None = None, cache: KVCache | None = None,
                 dropout_rng: jax.Array | None = None, return_logits: bool = True) -> LlamaOutput:
        """input_ids `[B, T]` or inputs_embeds `[B, T, D]`; positions `[B, T]` (default 0..T-1).

        Without `cache`: causal self-attention over the T tokens (training, right padding).
        With `cache`: attention reads the cached slots below each row's first position plus the T tokens,
        then their k/v are written at `positions` (decode; see `KVCache`). `dropout_rng` switches LoRA
        dropout on (None: deterministic).

        Raises:
          ValueError: both or neither of input_ids / inputs_embeds, a wrong shape, ids outside the vocabulary
            (concrete ids only), a cache of another batch size, a per-layer cache with a scanned model.
        """
        x, positions = self._inputs(input_ids, inputs_embeds, positions)
        if cache is not None and cache.batch_size(self.config.num_key_value_heads) != x.shape[0]:
            raise ValueError(f"cache batch {cache.batch_size(self.config.num_key_value_heads)} != input batch "
                             f"{x.shape[0]}")
        if cache is not None and not cache.stacked:
            x, cache = self._layers_per_layer_cache(x, positions, cache, dropout_rng)
        else:
            x, new_kv = self._layers(x, positions, cache, dropout_rng, collect_kv=cache is not None)
            if cache is not None:
                cache = cache.write(*new_kv, positions)
        return self._outputs(x, cache, return_logits)

    def prefill(self, input_ids: jax.Array | None = None, *, inputs_embeds: jax.Array | None = None,
                max_len: int, return_logits: bool = False) -> LlamaOutput:
        """A prompt at positions 0..T-1 (as `__call__` without a cache: no empty cache slots are read)
        -> its outputs and a new cache of `max_len` >= T slots holding it (`KVCache.from_prompt`)."""
        x, positions = self._inputs(input_ids, inputs_embeds, None)
        x, (k, v) = self._layers(x, positions, None, None, collect_kv=True)
        return self._outputs(x, KVCache.from_prompt(k, v, max_len, stacked=self.config.scan_layers), return_logits)

    def _inputs(self, input_ids, inputs_embeds, positions) -> tuple[jax.Array, jax.Array]:
        """-> embeddings `[B, T, D]` (compute dtype), positions `[B, T]`, after the argument checks."""
        cfg = self.config
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if input_ids is not None:
            if input_ids.ndim != 2:
                raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
            check_token_ids(input_ids, cfg.vocab_size)
            x = self.embed_tokens(input_ids)
        else:
            if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != cfg.hidden_size:
                raise ValueError(f"inputs_embeds must be [batch, seq, {cfg.hidden_size}], "
                                 f"got shape {inputs_embeds.shape}")
            x = inputs_embeds.astype(cfg.compute_dtype)
        b, t, _ = x.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if positions.shape != (b, t):
            raise ValueError(f"positions must have shape {(b, t)}, got {positions.shape}")
        check_batch_divisible(b, field="batch")
        return x, positions

    def _layers(self, x, positions, cache: KVCache | None, dropout_rng, *, collect_kv: bool):
        """-> (last layer's output `[B, T, D]`, new (k, v) `[L, B, T, K, H]` when `collect_kv`, else None).

        The stacked cache travels as scan input, read only; the new k/v come out as the scan's per-layer outputs,
        so a decode step writes one token per layer instead of copying every layer's cache."""
        x, cos, sin, layer_keys = self._layer_inputs(x, positions, dropout_rng)
        # Each layer's slice [B, K, S, H] is flattened to attention's [B * K, S, H] (free: a contiguous view).
        layer_cache = None if cache is None else tuple(c.reshape(c.shape[0], -1, *c.shape[3:]) for c in cache)

        def step(layer, h, xs):
            kv, key = xs
            h, new_kv = layer(h, cos, sin, positions, kv, key)
            return h, (new_kv if collect_kv else None)

        return apply_layers(self.layers, step, x, (layer_cache, layer_keys), scan=self.config.scan_layers,
                            remat=self.config.remat)

    def _layers_per_layer_cache(self, x, positions, cache: KVCache, dropout_rng) -> tuple[jax.Array, KVCache]:
        """The unscanned layers over a per-layer cache -> (last layer's output `[B, T, D]`, the updated cache).
        Each layer writes its buffer before reading it (see `LlamaAttention`), so every buffer is updated in
        place. A plain loop: per-layer buffers are no leading-axis input of `apply_layers`, and decoding needs
        no remat.

        Raises:
          ValueError: a scanned model.
        """
        if self.config.scan_layers:
            raise ValueError("a per-layer KVCache needs scan_layers=False (KVCache.init picks the layout)")
        x, cos, sin, layer_keys = self._layer_inputs(x, positions, dropout_rng)
        keys = [None] * len(cache.k) if layer_keys is None else list(layer_keys)
        new = []
        for layer, k, v, key in zip(self.layers, cache.k, cache.v, keys):
            x, kv = layer(x, cos, sin, positions, (k, v), key, update_cache=True)
            new.append(kv)
        return x, KVCache(*(tuple(buffers) for buffers in zip(*new)))

    def _layer_inputs(self, x, positions, dropout_rng):
        """-> (x sharded, RoPE cos and sin, per-layer dropout keys `[L]` or None)."""
        cfg = self.config
        x = shard_activation(x, ("batch", "seq", "act_embed"))
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta)
        layer_keys = (None if dropout_rng is None
                      else jax.random.split(dropout_rng, cfg.num_hidden_layers))
        return x, cos, sin, layer_keys

    def _outputs(self, x, cache: KVCache | None, return_logits: bool) -> LlamaOutput:
        hidden = self.norm(x)
        return LlamaOutput(self.lm_head(hidden) if return_logits else None, hidden, cache)
