"""Greedy generation: one jitted prefill + `lax.while_loop` decode over a fixed-size KV cache."""
from __future__ import annotations

import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.llama.kv_cache import KVCache
from seedx_jax.llama.model import LlamaForCausalLM, check_token_ids


class GenerateOutput(NamedTuple):
    tokens: jax.Array  # [B, max_new_tokens], pad_token_id after a row's stop token
    num_tokens: jax.Array  # [B] generated tokens per row, stop token included


def generate(model: LlamaForCausalLM, prompt_ids, max_new_tokens: int, *, prompt_lengths=None,
             stop_token_ids: Sequence[int] = (), pad_token_id: int = 0) -> GenerateOutput:
    """Greedy decoding of right-padded prompts `[B, T]` (`prompt_lengths` `[B]`, default T).

    Row b continues from position `prompt_lengths[b]`; it stops after emitting a stop token.
    """
    cfg = model.config
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be [batch, seq] with seq >= 1, got shape {prompt_ids.shape}")
    b, t = prompt_ids.shape
    lengths = np.full((b,), t) if prompt_lengths is None else np.asarray(prompt_lengths)
    if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > t:
        raise ValueError(f"prompt_lengths must be [{b}] values in [1, {t}], got {lengths.tolist()}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    check_token_ids(prompt_ids, cfg.vocab_size, "prompt_ids")
    for name, ids in (("stop_token_ids", list(stop_token_ids)), ("pad_token_id", [pad_token_id])):
        check_token_ids(np.asarray(ids, np.int64), cfg.vocab_size, name)
    graphdef, state = nnx.split(model)
    return _generate(graphdef, state, jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(lengths, jnp.int32),
                     max_new_tokens, tuple(int(s) for s in stop_token_ids), int(pad_token_id))


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _generate(graphdef, state, prompt_ids, lengths, max_new_tokens, stop_ids, pad_id):
    model = nnx.merge(graphdef, state)
    b, t = prompt_ids.shape
    cache = KVCache.init(model.config, b, t + max_new_tokens)
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    out = model(prompt_ids, positions=positions, cache=cache, return_logits=False)
    last_hidden = out.hidden_states[jnp.arange(b), lengths - 1]
    first = jnp.argmax(model.lm_head(last_hidden), axis=-1).astype(jnp.int32)

    def is_stop(tok):
        return jnp.isin(tok, jnp.asarray(stop_ids, jnp.int32)) if stop_ids else jnp.zeros_like(tok, bool)

    tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    init = (jnp.int32(1), tokens, is_stop(first), out.cache, lengths, jnp.ones((b,), jnp.int32))

    def cond(carry):
        i, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, tokens, done, cache, pos, count = carry
        prev = tokens[:, i - 1]
        step = model(prev[:, None], positions=pos[:, None], cache=cache)
        nxt = jnp.argmax(step.logits[:, 0], axis=-1).astype(jnp.int32)
        tokens = tokens.at[:, i].set(jnp.where(done, pad_id, nxt))
        count = count + (~done).astype(jnp.int32)
        return i + 1, tokens, done | is_stop(nxt), step.cache, pos + 1, count

    _, tokens, _, _, _, count = jax.lax.while_loop(cond, body, init)
    return GenerateOutput(tokens, count)
