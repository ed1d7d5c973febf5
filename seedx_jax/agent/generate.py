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
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax import tokens as T
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.llama.generate import Sampling, check_generate_args, decode


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


class AgentGenerator:
    """`generate_agent` for one agent, split once: each call runs one compiled program (embedding, prefill and
    decoding together) and, when images were drawn, one for the output resampler; no module-tree walk.
    Holds the weights as they were at construction (rebuild it after changing them)."""

    def __init__(self, agent: SeedXAgent):
        self.config = agent.config
        graphdef, self.state = nnx.split(agent)
        self._run, self._regress = _compiled_for(graphdef)

    def __call__(self, prompt_ids, *, max_new_tokens: int, forcing: ImageTokenForcing,
                 stop_token_ids: Sequence[int], prompt_lengths=None, ids_cmp_mask=None, cmp_features=None,
                 cmp_positions=None, sampling: Sampling = Sampling(), seed: int = 0, pad_token_id: int = 0,
                 progress: bool = False) -> AgentGeneration:
        """As `generate_agent`."""
        n = self.config.num_image_tokens
        if forcing.num_image_tokens != n:
            raise ValueError(f"forcing span has {forcing.num_image_tokens} image tokens, the agent uses {n}")
        prompt_ids, lengths = check_generate_args(self.config.llm, prompt_ids, max_new_tokens, prompt_lengths,
                                                  None, stop_token_ids, pad_token_id)
        images = (None,) * 3
        if cmp_features is not None:
            if ids_cmp_mask is None:
                raise ValueError("cmp_features need ids_cmp_mask (the placeholder positions)")
            images = (np.asarray(ids_cmp_mask), np.asarray(cmp_features), cmp_positions)
            if images[0].sum() != len(images[1]) * n:  # checked here: inside the program the mask is traced
                raise ValueError(f"ids_cmp_mask marks {images[0].sum()} positions but {len(images[1])} images x {n} "
                                 f"tokens need {len(images[1]) * n}")
        out = self._run(self.state, prompt_ids.astype(np.int32), lengths.astype(np.int32), *images,
                        jax.random.key(seed), max_new_tokens, tuple(int(i) for i in stop_token_ids),
                        int(pad_token_id), sampling, forcing, True, progress)
        tokens, counts = np.asarray(out.tokens), np.asarray(out.num_tokens)
        ends = [[e for e in range(n, int(c)) if tokens[row, e] == forcing.span[-1]] for row, c in enumerate(counts)]
        spans = [(row, e) for row, row_ends in enumerate(ends) for e in row_ends]
        feats = np.zeros((0, n, self.config.feature_dim), np.float32)
        if spans:  # H[e - n : e]: the states whose inputs were image tokens 0..n-1 (as official)
            hidden = jnp.stack([out.hidden_states[row, e - n:e] for row, e in spans])
            feats = np.asarray(self._regress(self.state, hidden), np.float32)
        per_row, k = [], 0
        for row_ends in ends:
            per_row.append(feats[k:k + len(row_ends)])
            k += len(row_ends)
        return AgentGeneration(tokens, counts, per_row, ends)


@functools.lru_cache(maxsize=8)
def _compiled_for(graphdef):
    """The jitted (decode, regress) programs of one agent structure, shared by its `AgentGenerator`s; the graph
    is bound here, not passed as a static argument, so calls do not hash it."""
    return (jax.jit(functools.partial(_embed_and_decode, graphdef), static_argnums=tuple(range(7, 14))),
            jax.jit(functools.partial(_regress, graphdef)))


def _embed_and_decode(graphdef, state, prompt_ids, lengths, ids_cmp_mask, cmp_features, cmp_positions, *args):
    agent = nnx.merge(graphdef, state)
    embeds = agent.embed(prompt_ids, ids_cmp_mask, cmp_features, cmp_positions)
    return decode(agent.llm, prompt_ids, lengths, embeds, *args)


def _regress(graphdef, state, hidden):
    return nnx.merge(graphdef, state).output_resampler(hidden)


def generate_agent(agent: SeedXAgent, prompt_ids, *, max_new_tokens: int, forcing: ImageTokenForcing,
                   stop_token_ids: Sequence[int], prompt_lengths=None, ids_cmp_mask=None, cmp_features=None,
                   cmp_positions=None, sampling: Sampling = Sampling(), seed: int = 0,
                   pad_token_id: int = 0, progress: bool = False) -> AgentGeneration:
    """Right-padded prompts `[B, T]` with the comprehension images of all rows (`cmp_features`
    `[n, 256, C]` in slot order) -> generated ids and the features of every complete image span.

    Splits the agent on every call: repeated calls keep an `AgentGenerator`.

    Raises:
      ValueError: a forcing span of another image-token count, a bad prompt (`check_generate_args`), an image
        mask that does not mark 64 slots per image.
    """
    return AgentGenerator(agent)(prompt_ids, max_new_tokens=max_new_tokens, forcing=forcing,
                                 stop_token_ids=stop_token_ids, prompt_lengths=prompt_lengths,
                                 ids_cmp_mask=ids_cmp_mask, cmp_features=cmp_features, cmp_positions=cmp_positions,
                                 sampling=sampling, seed=seed, pad_token_id=pad_token_id, progress=progress)


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
