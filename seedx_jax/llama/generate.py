"""Decoding: one jitted prefill + `lax.while_loop` decode over a fixed-size KV cache.

Greedy or sampled (temperature, top-k, top-p, a seed), with an optional logits processor (a hashable
callable `(logits [B, V], last_ids [B]) -> logits`, e.g. SEED-X's image-token forcing), a prefill
from `inputs_embeds` (multimodal prompts), and the post-norm hidden state of every decode step.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.llama.config import LlamaConfig
from seedx_jax.llama.model import LlamaForCausalLM, check_token_ids
from seedx_jax.progress import report_step

LogitsProcessor = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Sampling:
    """temperature 0: greedy (SEED-X's released setting); otherwise softmax sampling after top-k / top-p."""

    temperature: float = 0.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off

    def __post_init__(self):
        if not self.temperature >= 0:
            raise ValueError(f"Sampling.temperature={self.temperature} must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"Sampling.top_k={self.top_k} must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"Sampling.top_p={self.top_p} must be in (0, 1]")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def select_tokens(logits: jax.Array, sampling: Sampling, key: jax.Array) -> jax.Array:
    """logits `[B, V]` -> token ids `[B]` (HF semantics: temperature, then top-k, then top-p)."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / sampling.temperature
    if sampling.top_k:
        kth = jax.lax.top_k(logits, min(sampling.top_k, logits.shape[-1]))[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if sampling.top_p < 1:
        ordered = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(ordered, axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs  # keep a token while the mass before it < top_p
        kept = jnp.where(mass_before < sampling.top_p, ordered, jnp.inf)
        logits = jnp.where(logits < kept.min(axis=-1, keepdims=True), -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


class GenerateOutput(NamedTuple):
    tokens: jax.Array  # [B, max_new_tokens], pad_token_id after a row's stop token
    num_tokens: jax.Array  # [B] generated tokens per row, stop token included
    # [B, max_new_tokens, D] post-norm hidden state computed with generated token j as input
    # (return_hidden only; entry num_tokens - 1 onwards is never computed and stays 0).
    hidden_states: jax.Array | None = None


def check_generate_args(cfg: LlamaConfig, prompt_ids, max_new_tokens: int, prompt_lengths=None,
                        inputs_embeds=None, stop_token_ids: Sequence[int] = (),
                        pad_token_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Host-side checks of a decode request (no device work) -> (prompt_ids `[B, T]`, prompt_lengths `[B]`).

    Raises:
      ValueError: a prompt that is not `[B, T >= 1]`, lengths outside [1, T], max_new_tokens < 1, prompt +
        max_new_tokens beyond the context, inputs_embeds not `[B, T, D]`, ids outside the vocabulary.
    """
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids must be [batch, seq] with seq >= 1, got shape {prompt_ids.shape}")
    b, t = prompt_ids.shape
    lengths = np.full((b,), t) if prompt_lengths is None else np.asarray(prompt_lengths)
    if lengths.shape != (b,) or lengths.min() < 1 or lengths.max() > t:
        raise ValueError(f"prompt_lengths must be [{b}] values in [1, {t}], got {lengths.tolist()}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
    if t + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"prompt ({t} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model context of "
                         f"{cfg.max_position_embeddings} positions; shorten the prompt or lower max_new_tokens")
    if inputs_embeds is not None and tuple(inputs_embeds.shape) != (b, t, cfg.hidden_size):
        raise ValueError(f"inputs_embeds must be {(b, t, cfg.hidden_size)}, got {tuple(inputs_embeds.shape)}")
    check_token_ids(prompt_ids, cfg.vocab_size, "prompt_ids")
    for name, ids in (("stop_token_ids", list(stop_token_ids)), ("pad_token_id", [pad_token_id])):
        check_token_ids(np.asarray(ids, np.int64), cfg.vocab_size, name)
    return prompt_ids, lengths


class Generator:
    """`generate` for one model, split once: each call pays the argument checks and one compiled-program
    dispatch, no module-tree walk. Holds the weights as they were at construction (rebuild it after changing
    them)."""

    def __init__(self, model: LlamaForCausalLM):
        self.config = model.config
        graphdef, self.state = nnx.split(model)
        self._run = _compiled_for(graphdef)

    def __call__(self, prompt_ids, max_new_tokens: int, *, prompt_lengths=None, inputs_embeds=None,
                 stop_token_ids: Sequence[int] = (), pad_token_id: int = 0, sampling: Sampling = Sampling(),
                 seed: int = 0, logits_processor: LogitsProcessor | None = None, return_hidden: bool = False,
                 progress: bool = False) -> GenerateOutput:
        """As `generate`."""
        prompt_ids, lengths = check_generate_args(self.config, prompt_ids, max_new_tokens, prompt_lengths,
                                                  inputs_embeds, stop_token_ids, pad_token_id)
        return self._run(self.state, prompt_ids.astype(np.int32), lengths.astype(np.int32), inputs_embeds,
                         jax.random.key(seed), max_new_tokens, tuple(int(i) for i in stop_token_ids),
                         int(pad_token_id), sampling, logits_processor, return_hidden, progress)


def generate(model: LlamaForCausalLM, prompt_ids, max_new_tokens: int, **kwargs) -> GenerateOutput:
    """Decode right-padded prompts `[B, T]` (`prompt_lengths` `[B]`, default T).

    Row b continues from position `prompt_lengths[b]` and stops after emitting a stop token.
    `inputs_embeds` `[B, T, D]` replaces the prompt's token embeddings in the prefill (the ids are
    still what `logits_processor` sees as the last token). `progress`: report every 16th token to the
    active `seedx_jax.progress` reporter. The keyword arguments are `Generator.__call__`'s. Splits the
    model on every call: repeated calls keep a `Generator`.

    Raises:
      ValueError: see `check_generate_args`.
    """
    return Generator(model)(prompt_ids, max_new_tokens, **kwargs)


@functools.lru_cache(maxsize=8)
def _compiled_for(graphdef):
    """One jitted decode program per model structure (shared by its `Generator`s); the graph is bound here,
    not passed as a static argument, so calls do not hash it."""
    return jax.jit(functools.partial(_merge_and_decode, graphdef), static_argnums=tuple(range(5, 12)))


def _merge_and_decode(graphdef, state, *args):
    return decode(nnx.merge(graphdef, state), *args)


def decode(model: LlamaForCausalLM, prompt_ids, lengths, inputs_embeds, key, max_new_tokens: int,
           stop_ids: tuple[int, ...], pad_id: int, sampling: Sampling, processor: LogitsProcessor | None,
           return_hidden: bool, progress: bool) -> GenerateOutput:
    """The traced decode program (call inside `jax.jit`): prefill, first token, then a `while_loop` of
    single-token steps that each read the KV cache once and write one slot per layer."""
    b, t = prompt_ids.shape
    rows = jnp.arange(b)
    max_len = t + max_new_tokens
    if inputs_embeds is None:
        out = model.prefill(prompt_ids, max_len=max_len)
    else:
        out = model.prefill(inputs_embeds=inputs_embeds, max_len=max_len)

    def pick(logits, last, i):
        logits = logits.astype(jnp.float32)
        if processor is not None:
            logits = processor(logits, last)
        return select_tokens(logits, sampling, jax.random.fold_in(key, i))

    first = pick(model.lm_head(out.hidden_states[rows, lengths - 1]), prompt_ids[rows, lengths - 1], 0)

    def is_stop(tok):
        return jnp.isin(tok, jnp.asarray(stop_ids, jnp.int32)) if stop_ids else jnp.zeros_like(tok, bool)

    tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
    hidden = (jnp.zeros((b, max_new_tokens, model.config.hidden_size), out.hidden_states.dtype)
              if return_hidden else None)
    init = (jnp.int32(1), tokens, is_stop(first), out.cache, lengths, jnp.ones((b,), jnp.int32), hidden)

    def cond(carry):
        i, _, done, *_ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def body(carry):
        i, tokens, done, cache, pos, count, hidden = carry
        prev = tokens[:, i - 1]
        step = model(prev[:, None], positions=pos[:, None], cache=cache)
        if return_hidden:
            hidden = hidden.at[:, i - 1].set(step.hidden_states[:, 0])
        nxt = pick(step.logits[:, 0], prev, i)
        tokens = tokens.at[:, i].set(jnp.where(done, pad_id, nxt))
        count = count + (~done).astype(jnp.int32)
        if progress:
            jax.lax.cond(i % 16 == 0, lambda: report_step(i, max_new_tokens, "tokens"), lambda: None)
        return i + 1, tokens, done | is_stop(nxt), step.cache, pos + 1, count, hidden

    _, tokens, _, _, _, count, hidden = jax.lax.while_loop(cond, body, init)
    return GenerateOutput(tokens, count, hidden)
