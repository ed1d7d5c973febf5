"""SEED-X generation (`ContinuousLVLM.generate`): multimodal prefill, decoding with image-token forcing, and the
regressed features of every generated image.

Forcing (`AutoImageTokenGenerationProcessor`): when the last token is `<img>` or image token k < 63,
the next token is image token k + 1 (or `</img>` after the last); otherwise the logits of the image
tokens and `</img>` are set to `suppress_value`. Differences from the official processor, on purpose:
* the official one forces by raising the target to `max + 10`; we also set every other logit to
  -inf. Under greedy decoding (the released setting) the chosen ids are identical; under sampling
  ours still guarantees the complete 64-token span.
* `suppress_value` defaults to the official 0.0 (SEED-X generation.py: an image token can still win when every
  other logit is negative); pass `float("-inf")` to rule that out.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax import tokens as T
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.llama.generate import Sampling, generate


@dataclasses.dataclass(frozen=True)
class ImageTokenForcing:
    """`span` = ids of `<img>`, the image tokens 0..n-1, `</img>` (hashable: a static jit argument)."""

    span: tuple[int, ...]
    suppress_value: float = 0.0

    @classmethod
    def from_tokenizer(cls, tokenizer: SeedXTokenizer, num_image_tokens: int = T.NUM_IMAGE_TOKENS,
                       suppress_value: float = 0.0) -> "ImageTokenForcing":
        text = T.IMG_START + T.image_placeholders(num_image_tokens) + T.IMG_END
        return cls(tuple(tokenizer.encode(text)), suppress_value)

    @property
    def num_image_tokens(self) -> int:
        return len(self.span) - 2

    def __call__(self, logits: jax.Array, last_ids: jax.Array) -> jax.Array:
        """logits `[B, V]`, last_ids `[B]` -> processed logits `[B, V]`."""
        span = jnp.asarray(self.span, jnp.int32)
        match = last_ids[:, None] == span[None, :-1]  # [B, n + 1]
        inside = match.any(axis=-1)
        target = span[1:][jnp.argmax(match, axis=-1)]
        is_target = jnp.arange(logits.shape[-1])[None, :] == target[:, None]
        forced = jnp.where(is_target, logits.max(axis=-1, keepdims=True) + 10, -jnp.inf)
        suppressed = logits.at[:, span[1:]].set(self.suppress_value)
        return jnp.where(inside[:, None], forced, suppressed)


class AgentGeneration(NamedTuple):
    tokens: np.ndarray  # [B, max_new_tokens]
    num_tokens: np.ndarray  # [B]
    image_features: list[np.ndarray]  # per row: [k, 64, C] regressed features of its k generated images
    image_token_ends: list[list[int]]  # per row: generated index of each image's `</img>`


@nnx.jit
def _embed(agent, input_ids, ids_cmp_mask, cmp_features, cmp_positions):
    return agent.embed(input_ids, ids_cmp_mask, cmp_features, cmp_positions)


@nnx.jit
def _regress(agent, hidden):
    return agent.output_resampler(hidden)


def generate_agent(agent: SeedXAgent, prompt_ids, *, max_new_tokens: int, forcing: ImageTokenForcing,
                   stop_token_ids: Sequence[int], prompt_lengths=None, ids_cmp_mask=None, cmp_features=None,
                   cmp_positions=None, sampling: Sampling = Sampling(), seed: int = 0,
                   pad_token_id: int = 0, progress: bool = False) -> AgentGeneration:
    """Right-padded prompts `[B, T]` with the comprehension images of all rows (`cmp_features`
    `[n, 256, C]` in slot order) -> generated ids and the features of every complete image span."""
    n = agent.config.num_image_tokens
    if forcing.num_image_tokens != n:
        raise ValueError(f"forcing span has {forcing.num_image_tokens} image tokens, the agent uses {n}")
    prompt_ids = np.asarray(prompt_ids)
    if prompt_ids.ndim != 2:
        raise ValueError(f"prompt_ids must be [batch, seq], got shape {prompt_ids.shape}")
    if cmp_features is None:
        embeds = _embed(agent, jnp.asarray(prompt_ids), None, None, None)
    else:
        embeds = _embed(agent, jnp.asarray(prompt_ids), jnp.asarray(ids_cmp_mask), jnp.asarray(cmp_features),
                        jnp.asarray(cmp_positions))
    out = generate(agent.llm, prompt_ids, max_new_tokens, prompt_lengths=prompt_lengths, inputs_embeds=embeds,
                   stop_token_ids=stop_token_ids, pad_token_id=pad_token_id, sampling=sampling, seed=seed,
                   logits_processor=forcing, return_hidden=True, progress=progress)
    tokens, counts = np.asarray(out.tokens), np.asarray(out.num_tokens)
    ends = [[e for e in range(n, int(c)) if tokens[row, e] == forcing.span[-1]] for row, c in enumerate(counts)]
    spans = [(row, e) for row, row_ends in enumerate(ends) for e in row_ends]
    feats = np.zeros((0, n, agent.config.feature_dim), np.float32)
    if spans:  # H[e - n : e]: the states whose inputs were image tokens 0..n-1 (as official)
        hidden = jnp.stack([out.hidden_states[row, e - n:e] for row, e in spans])
        feats = np.asarray(_regress(agent, hidden), np.float32)
    per_row, k = [], 0
    for row_ends in ends:
        per_row.append(feats[k:k + len(row_ends)])
        k += len(row_ends)
    return AgentGeneration(tokens, counts, per_row, ends)


def generated_text(tokenizer: SeedXTokenizer, ids: Sequence[int], forcing: ImageTokenForcing) -> str:
    """As the official generate: drop each image's `<img>` and its image tokens, keep `</img>`, decode."""
    ids = list(ids)
    n = forcing.num_image_tokens
    drop = set()
    for e, tok in enumerate(ids):
        if tok == forcing.span[-1]:
            drop.update(range(max(e - n, 0), e))
    kept = [t for i, t in enumerate(ids) if i not in drop and t != forcing.span[0]]
    return tokenizer.decode(kept)
