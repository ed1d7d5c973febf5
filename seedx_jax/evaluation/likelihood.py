"""The model's log-likelihood of candidate answers: multiple choice by likelihood (SEED-Bench's rule:
each option's text is scored as the answer to the question, the most likely option is the choice).

An option's score is the mean log-probability of its tokens (length-normalised, so that a long option
is not penalised for its length), in float32.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seedx_jax.generate_batch import PROMPT_BUCKET
from seedx_jax.nn.bound import GraphSpec, bind

if TYPE_CHECKING:
    from seedx_jax.pipelines import SeedX, UserTurn


@functools.partial(jax.jit, static_argnums=0)
def _token_logprobs(spec: GraphSpec, values, ids, cmp_mask, cmp_features, cmp_positions, scored):
    """ids `[B, T]` -> the summed log-probability of the `scored` `[B, T]` tokens of each row `[B]`."""
    agent = spec.merge(values)
    logits = agent(ids, ids_cmp_mask=cmp_mask, cmp_features=cmp_features, cmp_positions=cmp_positions).logits
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    token = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return jnp.where(scored[:, 1:], token, 0.0).sum(-1)


def option_scores(pipe: SeedX, turn: UserTurn, options: Sequence[str], *, rows: int) -> list[float]:
    """The mean log-probability of each option's tokens after the prompt of `turn` (from
    `SeedX.prepare_chat`), all options in one batch of `rows` rows (padded: one program for every
    question with at most `rows` options).

    Raises:
      ValueError: more options than `rows`.
    """
    if len(options) > rows:
        raise ValueError(f"{len(options)} options, more than the {rows} rows of a likelihood batch")
    prompt = [pipe.tokenizer.bos_id, *turn.ids]
    answers = [pipe.tokenizer.encode(option) for option in options]
    longest = len(prompt) + max(map(len, answers))
    length = -(-longest // PROMPT_BUCKET) * PROMPT_BUCKET
    ids = np.zeros((rows, length), np.int32)
    scored = np.zeros((rows, length), bool)
    mask = np.zeros((rows, length), bool)
    for r in range(rows):
        answer = answers[min(r, len(answers) - 1)]
        ids[r, :len(prompt) + len(answer)] = prompt + answer
        scored[r, len(prompt):len(prompt) + len(answer)] = True
        mask[r, 1:len(prompt)] = turn.mask
    images = {}
    if turn.anyres:
        features = np.asarray(pipe.encoder(np.concatenate([a.pixels for a in turn.anyres])))
        positions = np.concatenate([a.positions for a in turn.anyres])
        images = dict(cmp_mask=mask, cmp_features=np.concatenate([features] * rows),
                      cmp_positions=np.concatenate([positions] * rows))
    bound = bind(pipe.agent)
    totals = _token_logprobs(bound.spec, bound.values(), ids, images.get("cmp_mask"), images.get("cmp_features"),
                             images.get("cmp_positions"), scored)
    totals = np.asarray(totals)[:len(options)]
    return [float(t / max(len(a), 1)) for t, a in zip(totals, answers)]
