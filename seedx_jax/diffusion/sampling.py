"""The whole denoising loop in one jit (`lax.fori_loop`): Euler / DDIM / DPM-Solver++ with guidance.

Guidance (decided on the host, like diffusers' pipelines):
- no condition latents (stage 1): classifier-free guidance when `guidance_scale > 1`, model batch
  `[negative, positive]` (SEEDX.md §9.5);
- condition latents or an 8-channel U-Net (stage 2, SEEDX.md §9.7): 3-way guidance when
  `guidance_scale > 1` and `image_guidance_scale >= 1`, model batch `[pos/cond, neg/cond, neg/zeros]`;
  the condition latent (unscaled VAE posterior mean) fills channels 4-7 after the scaled noisy latent.
The loop carries float32 latents whatever the U-Net dtype (diffusers casts back to the model dtype).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.diffusion.guidance import classifier_free_guidance, edit_guidance
from seedx_jax.diffusion.schedulers import (SOLVERS, NoiseScheduleConfig, dpmpp_2m_step, euler_step, make_schedule,
                                            scale_model_input)
from seedx_jax.diffusion.unet import UNet2DConditionModel
from seedx_jax.progress import report_step


@dataclasses.dataclass(frozen=True)
class SamplerConfig(ConfigBase):
    solver: str = "euler"  # euler | ddim | dpmpp_2m
    num_steps: int = 50  # SEED-X scripts: 50
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5  # stage 2 only
    schedule: NoiseScheduleConfig = NoiseScheduleConfig()

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"SamplerConfig.solver={self.solver!r} is not one of {SOLVERS}")
        if not 1 <= self.num_steps <= self.schedule.num_train_timesteps:
            raise ValueError(f"SamplerConfig.num_steps={self.num_steps} must be in "
                             f"[1, {self.schedule.num_train_timesteps}]")
        for name in ("guidance_scale", "image_guidance_scale"):
            if not getattr(self, name) > 0:  # also rejects NaN
                raise ValueError(f"SamplerConfig.{name}={getattr(self, name)} must be > 0")


class Conditioning(NamedTuple):
    """What the U-Net is conditioned on, per sample: context `[B, T, 2048]`, pooled `[B, 1280]`,
    time_ids `[B, 6]`."""

    context: jax.Array
    pooled: jax.Array
    time_ids: jax.Array


def _cat(*conds: Conditioning) -> Conditioning:
    return Conditioning(*(jnp.concatenate(parts, axis=0) for parts in zip(*conds)))


@functools.partial(jax.jit, static_argnames=("graphdef", "mode", "solver", "progress"), donate_argnames=("latents",))
def _denoise(graphdef, state, latents, timesteps, sigmas, cond: Conditioning, cond_latents, scales, *,
             mode: str, solver: str, progress: bool):
    branches = {"none": 1, "cfg": 2, "edit": 3}[mode]
    n = timesteps.shape[0]

    def body(i, carry):
        x, x0_prev = carry
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        model_in = jnp.concatenate([scale_model_input(x, sigma)] * branches, axis=0)
        if cond_latents is not None:
            model_in = jnp.concatenate([model_in, cond_latents], axis=-1)
        unet = nnx.merge(graphdef, state)
        eps = unet(model_in, timesteps[i], cond.context, cond.pooled, cond.time_ids).astype(jnp.float32)
        if mode == "cfg":
            eps_neg, eps_pos = jnp.split(eps, 2)
            eps = classifier_free_guidance(eps_neg, eps_pos, scales[0])
        elif mode == "edit":
            eps = edit_guidance(*jnp.split(eps, 3), x, sigma, scales[0], scales[1])
        x_next = euler_step(eps, x, sigma, sigma_next)
        if solver == "dpmpp_2m":  # second order except on the first and (sigma 0) last step
            second = dpmpp_2m_step(eps, x, x0_prev, sigmas[jnp.maximum(i - 1, 0)], sigma, sigma_next)
            x_next = jnp.where((i > 0) & (i < n - 1), second, x_next)
        if progress:
            report_step(i + 1, n, "denoising steps")
        return x_next, x - sigma * eps

    x, _ = jax.lax.fori_loop(0, n, body, (latents, jnp.zeros_like(latents)))
    return x


def sample_latents(unet: UNet2DConditionModel, positive: Conditioning, negative: Conditioning | None = None, *,
                   config: SamplerConfig = SamplerConfig(), noise: jax.Array | None = None,
                   latent_size: tuple[int, int] | None = None, seed: int = 0,
                   cond_latents: jax.Array | None = None, progress: bool = False) -> jax.Array:
    """Denoise from `noise` `[B, h, w, 4]` (or a seeded draw of `latent_size`) -> latents `[B, h, w, 4]`
    (unscaled by the VAE factor's inverse: divide by `scaling_factor` before decoding).

    positive/negative: `Conditioning` with batch B; `negative` is required when guidance is on.
    cond_latents `[B, h, w, 4]`: the stage-2 condition latent (zeros when the U-Net has 8 input
    channels and none is given). Inputs are checked before anything is compiled. `progress`: report
    each step to the active `seedx_jax.progress` reporter.
    """
    ucfg = unet.config
    b = positive.context.shape[0]
    latent_channels = ucfg.out_channels
    if noise is None:
        if latent_size is None:
            raise ValueError("sample_latents needs `noise` or `latent_size`")
        noise = jax.random.normal(jax.random.key(seed), (b, *latent_size, latent_channels), jnp.float32)
    if noise.ndim != 4 or noise.shape[0] != b or noise.shape[-1] != latent_channels:
        raise ValueError(f"noise must be [{b}, h, w, {latent_channels}] (batch of `positive`), got {tuple(noise.shape)}")
    stage2 = ucfg.in_channels == 2 * latent_channels
    if cond_latents is None and stage2:
        cond_latents = jnp.zeros(noise.shape, jnp.float32)
    if cond_latents is not None:
        if not stage2:
            raise ValueError(f"cond_latents given but the U-Net has in_channels={ucfg.in_channels}; "
                             f"stage 2 needs {2 * latent_channels}")
        if tuple(cond_latents.shape) != tuple(noise.shape):
            raise ValueError(f"cond_latents must be {tuple(noise.shape)} like the noise, got {tuple(cond_latents.shape)}")

    if stage2:
        mode = "edit" if config.guidance_scale > 1 and config.image_guidance_scale >= 1 else "none"
    else:
        mode = "cfg" if config.guidance_scale > 1 else "none"
    if mode != "none" and negative is None:
        raise ValueError(f"guidance_scale={config.guidance_scale} needs `negative` conditioning (or guidance_scale=1)")
    cond = {"none": lambda: positive, "cfg": lambda: _cat(negative, positive),
            "edit": lambda: _cat(positive, negative, negative)}[mode]()
    if cond_latents is not None:
        cond_latents = cond_latents.astype(jnp.float32)
        if mode == "edit":
            cond_latents = jnp.concatenate([cond_latents, cond_latents, jnp.zeros_like(cond_latents)], axis=0)
    unet.check_inputs((cond.context.shape[0], *noise.shape[1:3], ucfg.in_channels), cond.context.shape,
                      cond.pooled.shape, cond.time_ids.shape)

    schedule = make_schedule(config.solver, config.schedule, config.num_steps)
    latents = noise.astype(jnp.float32) * schedule.init_noise_sigma
    graphdef, state = nnx.split(unet)
    scales = jnp.asarray([config.guidance_scale, config.image_guidance_scale], jnp.float32)
    x = _denoise(graphdef, state, latents, jnp.asarray(schedule.timesteps), jnp.asarray(schedule.sigmas), cond,
                 cond_latents, scales, mode=mode, solver=config.solver, progress=progress)
    return x * schedule.final_scale
