"""The five SEED-X training stages: what is trained, on which examples, with which loss (docs/training_recipe.md).

| stage        | model                     | trainable                                                        | examples            |
|--------------|---------------------------|------------------------------------------------------------------|---------------------|
| detok_stage1 | ViT + de-tokenizer        | ResamplerXLV2 + every U-Net `to_k` / `to_v`                       | detok_image         |
| detok_stage2 | ViT + de-tokenizer (8 ch) | ResamplerXLV2 + the whole U-Net                                   | detok_edit          |
| pretrain     | ViT + agent (LoRA)        | LoRA, norms, embeddings, both resamplers, patch_pos_embed [UNKNOWN: as SFT] | vqa, t2i, edit |
| sft_comp_gen | ViT + agent (LoRA)        | same                                                             | vqa, t2i            |
| sft_edit     | ViT + agent (LoRA)        | same                                                             | edit                |

The ViT and the VAE are always frozen. Loss functions take the model, one micro-batch (see
`seedx_jax.data.examples`) and a key, and return (loss, aux scalars).

De-tokenizer training is not released ([UNKNOWN]); our choices, all in `DetokLossConfig`: epsilon
prediction with DDPM noising on SDXL's training betas, uniform timesteps, latents drawn from the VAE
posterior and scaled by the scaling factor, conditions = `vit_down` (64 tokens) of the target's ViT
features as at generation time, replaced by the zero-image negative with probability `cond_drop`
(classifier-free guidance), and (stage 2) the source latent (posterior mean, unscaled) zeroed with
probability `image_drop` (the third guidance branch).
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.agent.model import SeedXAgent, gather_rows, scatter_rows
from seedx_jax.detokenizer.model import Detokenizer
from seedx_jax.diffusion.schedulers import NoiseScheduleConfig, alphas_cumprod
from seedx_jax.diffusion.training import add_noise, sample_timesteps
from seedx_jax.lora import LoraConfig, trainable_filter
from seedx_jax.losses import next_token_loss
from seedx_jax.vision.features import patch_position_term, vit_down
from seedx_jax.vision.vit import QwenViT

MLLM_STAGES = ("pretrain", "sft_comp_gen", "sft_edit")
DETOK_STAGES = ("detok_stage1", "detok_stage2")
STAGES = DETOK_STAGES + MLLM_STAGES
STAGE_TASKS = {"detok_stage1": ("detok_image",), "detok_stage2": ("detok_edit",), "pretrain": ("vqa", "t2i", "edit"),
               "sft_comp_gen": ("vqa", "t2i"), "sft_edit": ("edit",)}


class MLLMTrainee(nnx.Module):
    def __init__(self, vit: QwenViT, agent: SeedXAgent):
        self.vit, self.agent = vit, agent


class DetokTrainee(nnx.Module):
    def __init__(self, vit: QwenViT, detokenizer: Detokenizer):
        self.vit, self.detokenizer = vit, detokenizer


def _names(path) -> list[str]:
    return [str(getattr(k, "key", k)) for k in path]


UNET_TRAINABLE = ("attention_kv", "all")


def trainable(stage: str, lora: LoraConfig | None = None,
              unet: str = "attention_kv") -> Callable[[tuple, object], bool]:
    """nnx filter of the parameters `stage` trains (everything else gets no gradient and no Adam state).
    De-tokenizer stage 1 trains the U-Net's `to_k`/`to_v` (SEED-X, over a pretrained SDXL) or, with
    `unet="all"`, the whole U-Net (a U-Net without pretraining, e.g. the shapes-world demo's)."""
    if stage not in STAGES:
        raise ValueError(f"unknown training stage {stage!r}; choose from {STAGES}")
    if unet not in UNET_TRAINABLE:
        raise ValueError(f"unet={unet!r} is not one of {UNET_TRAINABLE}")
    if stage in DETOK_STAGES:
        whole_unet = stage == "detok_stage2" or unet == "all"

        def detok(path, var) -> bool:
            names = _names(path)
            if not isinstance(var, nnx.Param) or names[0] != "detokenizer":
                return False
            if names[1] == "resampler" or (names[1] == "unet" and whole_unet):
                return True
            return names[1] == "unet" and any(n in ("to_k", "to_v") for n in names)
        return detok

    llm_filter = trainable_filter(lora or LoraConfig())

    def mllm(path, var) -> bool:
        names = _names(path)
        if not isinstance(var, nnx.Param) or names[0] != "agent":
            return False
        if names[1] == "llm":
            return llm_filter(tuple(path[2:]), var)
        return names[1] in ("input_resampler", "output_resampler", "patch_pos_embed")
    return mllm


def mllm_loss(model: MLLMTrainee, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
    """The official loss on row-local image slots: ViT (frozen) on every view slot, input resampler + patch position
    term written at each row's `ids_cmp_mask` positions in order, LM loss over the labels, and 6 x MSE
    of the output resampler at `ids_gen_mask` against `vit_down` of the generation targets (valid slots only)."""
    vit, agent = model.vit, model.agent
    cfg = agent.config
    n = cfg.num_image_tokens
    ids = batch["input_ids"]
    b, k = batch["cmp_pixels"].shape[:2]
    embeds = agent.llm.embed_tokens(ids)
    if k:
        views = batch["cmp_pixels"].reshape(b * k, *batch["cmp_pixels"].shape[2:])
        tokens = agent.input_resampler(jax.lax.stop_gradient(vit(views)))
        if cfg.add_patch_pos:
            pos = patch_position_term(batch["cmp_positions"].reshape(b * k, 2), agent.patch_pos_embed[...])
            tokens = tokens + pos.astype(tokens.dtype)[:, None]
        tokens = tokens.reshape(b, k * n, -1)
        embeds = jax.vmap(lambda e, m, t: scatter_rows(e[None], m[None], t)[0])(embeds, batch["ids_cmp_mask"], tokens)
    out = agent.llm(inputs_embeds=embeds, dropout_rng=rng)
    lm_loss = next_token_loss(out.logits, batch["labels"])
    g = batch["gen_pixels"].shape[1]
    rec_loss = jnp.zeros((), jnp.float32)
    if g:
        rows = jax.vmap(lambda h, m: gather_rows(h[None], m[None], g * n))(out.hidden_states, batch["ids_gen_mask"])
        pred = agent.output_resampler(rows.reshape(b * g, n, -1)).astype(jnp.float32)
        views = batch["gen_pixels"].reshape(b * g, *batch["gen_pixels"].shape[2:])
        target = jax.lax.stop_gradient(vit_down(vit(views), cfg.vit_down_pool)).astype(jnp.float32)
        per_image = jnp.mean(jnp.square(pred - target), axis=(1, 2))
        valid = batch["gen_valid"].reshape(-1).astype(jnp.float32)
        rec_loss = jnp.sum(per_image * valid) / jnp.maximum(jnp.sum(valid), 1.0)
    loss = cfg.lm_loss_scale * lm_loss + cfg.rec_loss_scale * rec_loss
    return loss, {"lm_loss": lm_loss, "rec_loss": rec_loss}


@dataclasses.dataclass(frozen=True)
class DetokLossConfig:
    cond_drop: float = 0.1  # [UNKNOWN] probability of the zero-image (negative) condition
    image_drop: float = 0.1  # [UNKNOWN] stage 2: probability of a zero source latent
    schedule: NoiseScheduleConfig = NoiseScheduleConfig()


def detok_loss_fn(cfg: DetokLossConfig = DetokLossConfig()):
    acp = jnp.asarray(alphas_cumprod(cfg.schedule))

    def loss_fn(model: DetokTrainee, batch: dict, rng: jax.Array) -> tuple[jax.Array, dict]:
        """batch: target `[B, R, R, 3]` in [-1, 1], view `[B, S, S, 3]`, (stage 2) source `[B, R, R, 3]`."""
        vit, detok = model.vit, model.detokenizer
        target = batch["target"]
        b, side = target.shape[0], target.shape[1]
        k_drop, k_latent, k_noise, k_time, k_image = jax.random.split(rng, 5)
        views = jnp.concatenate([batch["view"], jnp.zeros_like(batch["view"][:1])])
        feats = jax.lax.stop_gradient(vit_down(vit(views)))
        cond, negative = feats[:b], feats[b:]
        drop = jax.random.uniform(k_drop, (b,)) < cfg.cond_drop
        cond = jnp.where(drop[:, None, None], negative, cond)
        embeds, pooled = detok.resampler(cond)
        mean, logvar = detok.vae.encode(target)
        latents = jax.lax.stop_gradient(detok.vae.sample(mean, logvar, k_latent) * detok.vae.config.scaling_factor)
        noise = jax.random.normal(k_noise, latents.shape, latents.dtype)
        t = sample_timesteps(k_time, b, cfg.schedule)
        sample = add_noise(latents, noise, t, acp)
        if detok.config.edits:
            source = jax.lax.stop_gradient(detok.vae.encode(batch["source"])[0])
            keep = jax.random.uniform(k_image, (b,)) >= cfg.image_drop
            sample = jnp.concatenate([sample, source * keep[:, None, None, None].astype(source.dtype)], axis=-1)
        time_ids = jnp.tile(jnp.asarray([[side, side, 0, 0, side, side]], jnp.float32), (b, 1))
        eps = detok.unet(sample, t.astype(jnp.float32), embeds, pooled, time_ids)
        loss = jnp.mean(jnp.square(eps.astype(jnp.float32) - noise.astype(jnp.float32)))
        return loss, {"diffusion_loss": loss}

    return loss_fn
