"""`SeedXAgent`: the official `ContinuousLVLM` (src/models/mllm/seed_x.py) - image features in, features out.

Input side: resampled ViT features (+ the patch position term) overwrite the token embeddings at
the comprehension placeholders (`ids_cmp_mask`), in row-major order, 64 slots per image. Output
side: the post-norm hidden states at the generation placeholders (`ids_gen_mask`) go through the
output resampler and regress `vit_down(ViT features)` of the target image.
All shapes are static: the number of images is the leading size of the feature arrays.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.agent.config import AgentConfig
from seedx_jax.llama.model import LlamaForCausalLM
from seedx_jax.losses import next_token_loss
from seedx_jax.vision.features import patch_position_term, vit_down
from seedx_jax.vision.resampler import Resampler


class AgentOutput(NamedTuple):
    logits: jax.Array | None  # [B, T, vocab]
    hidden_states: jax.Array  # [B, T, D] post final RMSNorm
    gen_features: jax.Array | None  # [n_gen, 64, C] output-resampler predictions
    lm_loss: jax.Array | None  # next-token CE over labels != -100
    rec_loss: jax.Array | None  # MSE(gen_features, vit_down(gen_targets)); 0 without targets
    loss: jax.Array | None  # lm_loss_scale * lm_loss + rec_loss_scale * rec_loss


def _check_slots(mask, num_images: int, per_image: int, name: str) -> None:
    if mask is None or isinstance(mask, jax.core.Tracer):
        return
    slots = int(np.asarray(mask).sum())
    if slots != num_images * per_image:
        raise ValueError(f"{name} marks {slots} positions but {num_images} images x {per_image} tokens "
                         f"need {num_images * per_image}")


def scatter_rows(base: jax.Array, mask: jax.Array, rows: jax.Array) -> jax.Array:
    """base `[B, T, D]` with the True positions of mask `[B, T]` (row-major) replaced by rows `[N, D]`."""
    b, t, d = base.shape
    flat = mask.reshape(-1)
    index = jnp.clip(jnp.cumsum(flat) - 1, 0, rows.shape[0] - 1)
    return jnp.where(flat[:, None], rows[index].astype(base.dtype), base.reshape(-1, d)).reshape(b, t, d)


def gather_rows(x: jax.Array, mask: jax.Array, count: int) -> jax.Array:
    """The `count` rows of x `[B, T, D]` at the True positions of mask `[B, T]` (row-major) -> `[count, D]`."""
    index = jnp.nonzero(mask.reshape(-1), size=count, fill_value=0)[0]
    return x.reshape(-1, x.shape[-1])[index]


class SeedXAgent(nnx.Module):
    def __init__(self, cfg: AgentConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.llm = LlamaForCausalLM(cfg.llm, rngs=rngs)
        self.input_resampler = Resampler(cfg.input_resampler, rngs=rngs)
        self.output_resampler = Resampler(cfg.output_resampler, rngs=rngs)
        d = cfg.llm.hidden_size
        self.patch_pos_embed = nnx.Param(jax.random.normal(rngs.params(), (4, d), cfg.llm.params_dtype) * d ** -0.5,
                                         logical_axes=(None, "embed"))

    def embed(self, input_ids: jax.Array, ids_cmp_mask: jax.Array | None = None,
              cmp_features: jax.Array | None = None, cmp_positions: jax.Array | None = None) -> jax.Array:
        """input_ids `[B, T]`; cmp_features `[n_cmp, 256, C]` ViT outputs of the input views in slot order,
        cmp_positions `[n_cmp, 2]` (x, y) -> LLM input embeddings `[B, T, D]` (as official)."""
        embeds = self.llm.embed_tokens(input_ids)
        if cmp_features is None or cmp_features.shape[0] == 0:
            return embeds
        if ids_cmp_mask is None:
            raise ValueError("cmp_features need ids_cmp_mask (the placeholder positions)")
        n = self.config.num_image_tokens
        _check_slots(ids_cmp_mask, cmp_features.shape[0], n, "ids_cmp_mask")
        tokens = self.input_resampler(cmp_features)
        if self.config.add_patch_pos:
            if cmp_positions is None or cmp_positions.shape != (cmp_features.shape[0], 2):
                raise ValueError(f"cmp_positions must be [{cmp_features.shape[0]}, 2] (x, y) per image, got "
                                 f"{None if cmp_positions is None else tuple(cmp_positions.shape)}")
            tokens = tokens + patch_position_term(cmp_positions, self.patch_pos_embed[...]).astype(tokens.dtype)[:, None]
        return scatter_rows(embeds, ids_cmp_mask, tokens.reshape(-1, tokens.shape[-1]))

    def regress(self, hidden_states: jax.Array, ids_gen_mask: jax.Array, num_images: int) -> jax.Array:
        """Hidden states `[B, T, D]` at the generation placeholders -> output resampler `[n, 64, C]`."""
        n = self.config.num_image_tokens
        _check_slots(ids_gen_mask, num_images, n, "ids_gen_mask")
        rows = gather_rows(hidden_states, ids_gen_mask, num_images * n)
        return self.output_resampler(rows.reshape(num_images, n, -1))

    def __call__(self, input_ids: jax.Array, *, ids_cmp_mask=None, cmp_features=None, cmp_positions=None,
                 ids_gen_mask=None, gen_targets=None, labels=None, positions=None, dropout_rng=None) -> AgentOutput:
        """Training / scoring forward (official losses). gen_targets `[n_gen, 256, C]` are ViT features of the
        images to generate (pooled here by `vit_down`); labels `[B, T]` with -100 where untrained."""
        cfg = self.config
        embeds = self.embed(input_ids, ids_cmp_mask, cmp_features, cmp_positions)
        out = self.llm(inputs_embeds=embeds, positions=positions, dropout_rng=dropout_rng)
        gen_features = rec_loss = None
        if gen_targets is not None:
            if ids_gen_mask is None:
                raise ValueError("gen_targets need ids_gen_mask (the generation placeholder positions)")
            n_gen = gen_targets.shape[0]
            if n_gen:
                gen_features = self.regress(out.hidden_states, ids_gen_mask, n_gen)
                target = jax.lax.stop_gradient(vit_down(gen_targets, cfg.vit_down_pool))
                rec_loss = jnp.mean(jnp.square(gen_features.astype(jnp.float32) - target.astype(jnp.float32)))
            else:
                rec_loss = jnp.zeros((), jnp.float32)
        lm_loss = None if labels is None else next_token_loss(out.logits, labels)
        terms = [s * x for s, x in ((cfg.lm_loss_scale, lm_loss), (cfg.rec_loss_scale, rec_loss)) if x is not None]
        loss = sum(terms) if terms else None
        return AgentOutput(out.logits, out.hidden_states, gen_features, lm_loss, rec_loss, loss)
