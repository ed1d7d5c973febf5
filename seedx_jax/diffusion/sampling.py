"""The whole denoising loop in one jit (`lax.fori_loop`): Euler / DDIM / DPM-Solver++ with guidance.

Guidance (decided on the host, like diffusers' pipelines):
- no condition latents (stage 1): classifier-free guidance when `guidance_scale > 1`, model batch
  `[negative, positive]` (docs/detokenizer.md#stage-1-sampling);
- condition latents or an 8-channel U-Net (stage 2, docs/detokenizer.md): 3-way guidance when
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
import numpy as np

from seedx_jax.config_base import ConfigBase
from seedx_jax.diffusion.guidance import classifier_free_guidance, edit_guidance
from seedx_jax.diffusion.schedulers import (SOLVERS, NoiseScheduleConfig, dpmpp_2m_step, euler_step, make_schedule,
                                            scale_model_input)
from seedx_jax.diffusion.unet import UNet2DConditionModel
from seedx_jax.nn.bound import GraphSpec, bind
from seedx_jax.numerics import nonfinite_counts
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
        try:  # each solver's own limits (ddim: at most 999 steps on SDXL's schedule)
            make_schedule(self.solver, self.schedule, self.num_steps)
        except ValueError as err:
            raise ValueError(f"SamplerConfig: {err}") from None


class Conditioning(NamedTuple):
    """What the U-Net is conditioned on, per sample: context `[B, T, 2048]`, pooled `[B, 1280]`
    (floating point), time_ids `[B, 6]` (floating point or integers); jax or numpy arrays.
    `sample_latents` checks them (a NamedTuple cannot)."""

    context: jax.Array
    pooled: jax.Array
    time_ids: jax.Array


def check_seed(seed) -> int:
    """Seeds are integers in [0, 2**32): the range JAX's and NumPy's generators share.

    Raises:
      ValueError: another type (a float, a bool) or a value out of range.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 32:
        raise ValueError(f"seed={seed!r} must be an integer in [0, 2**32)")
    return int(seed)


def user_array(x, name: str, *, integers: bool = False) -> jax.Array:
    """A caller's jax or numpy array as float32 (any shape).

    Raises:
      ValueError: naming `name`, when `x` is not a jax / numpy array, is not floating point (with
        `integers`, integer dtypes are accepted too), or holds NaN / Inf: those would only show as a
        NaN image after the whole sampling loop.
    """
    if not isinstance(x, (jax.Array, np.ndarray)):
        raise ValueError(f"{name} must be a jax or numpy array, got {type(x).__name__}")
    if not (jnp.issubdtype(x.dtype, jnp.floating) or (integers and jnp.issubdtype(x.dtype, jnp.integer))):
        raise ValueError(f"{name} has dtype {x.dtype}; expected {'numbers' if integers else 'floating point values'}")
    nan, inf = nonfinite_counts(x)
    if nan or inf:
        raise ValueError(f"{name} holds {nan} NaN and {inf} infinite values")
    return jnp.asarray(x, jnp.float32)


def _conditioning(cond, name: str) -> Conditioning:
    """`cond` checked by `user_array` field by field (the shapes are the U-Net's `check_inputs`)."""
    if not isinstance(cond, Conditioning):
        raise ValueError(f"{name} must be a Conditioning(context, pooled, time_ids), got {type(cond).__name__}")
    out = Conditioning(user_array(cond.context, f"{name}.context"), user_array(cond.pooled, f"{name}.pooled"),
                       user_array(cond.time_ids, f"{name}.time_ids", integers=True))
    if out.context.ndim != 3:  # its batch sizes everything else
        raise ValueError(f"{name}.context has shape {tuple(out.context.shape)}; expected [B, T, C]")
    return out


def _latent_size(size) -> tuple[int, int]:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in size)):
        raise ValueError(f"latent_size={size!r} must be (height, width): two positive integers")
    return int(size[0]), int(size[1])


def guidance_mode(config: SamplerConfig, stage2: bool) -> str:
    """"none" | "cfg" (stage 1, guidance_scale > 1) | "edit" (stage 2, guidance_scale > 1 and
    image_guidance_scale >= 1), as diffusers' pipelines decide it on the host."""
    if stage2:
        return "edit" if config.guidance_scale > 1 and config.image_guidance_scale >= 1 else "none"
    return "cfg" if config.guidance_scale > 1 else "none"


class SamplerTables(NamedTuple):
    """A `SamplerConfig`'s constants as device arrays: timesteps `[n]`, sigmas `[n + 1]`, and the
    scalars init_noise_sigma, final_scale, guidance scales `[2]` (float32). Arrays, not static
    arguments: another guidance scale or noise schedule of the same step count reuses the compiled loop."""

    timesteps: jax.Array
    sigmas: jax.Array
    init_noise_sigma: jax.Array
    final_scale: jax.Array
    scales: jax.Array


@dataclasses.dataclass(frozen=True)
class RenderSettings:
    """What a user sets for one image request (`seedx-jax serve`, `seedx-jax eval`): the sampler, the seed
    and the size (SEED-X's scripts: 50 Euler steps, CFG 7.5, image CFG 1.5, 1024 x 1024)."""

    steps: int = 50
    guidance_scale: float = 7.5
    image_guidance_scale: float = 1.5
    seed: int = 0
    height: int = 1024
    width: int = 1024
    solver: str = "euler"

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(solver=self.solver, num_steps=self.steps, guidance_scale=self.guidance_scale,
                             image_guidance_scale=self.image_guidance_scale)


@functools.lru_cache(maxsize=64)
def sampler_tables(config: SamplerConfig) -> SamplerTables:
    """The schedule of `config`, computed and transferred once per config (configs are frozen)."""
    s = make_schedule(config.solver, config.schedule, config.num_steps)
    return SamplerTables(*(jnp.asarray(np.asarray(x, np.float32)) for x in (
        s.timesteps, s.sigmas, s.init_noise_sigma, s.final_scale,
        (config.guidance_scale, config.image_guidance_scale))))


def _cat(*conds: Conditioning) -> Conditioning:
    return Conditioning(*(jnp.concatenate(parts, axis=0) for parts in zip(*conds)))


def draw_noise(seed: int, shape: tuple[int, ...]) -> jax.Array:
    """Standard normal float32 `shape` from `seed`, drawn on its own: inside a larger program XLA may
    round it differently, and a seed must give the same noise as `jax.random.normal` everywhere."""
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


@functools.partial(jax.jit, static_argnames=("unet", "mode", "solver", "progress"))
def _denoise(unet: GraphSpec, unet_values, noise, positive: Conditioning, negative: Conditioning | None,
             cond_latents, tables: SamplerTables, *, mode: str, solver: str, progress: bool):
    """The whole loop: noise `[B, h, w, 4]` -> final latents. `unet` rebuilds the U-Net from
    `unet_values` (`seedx_jax.nn.bound`); stage 2 when `cond_latents` `[B, h, w, 4]` is given.
    Every host decision (mode, solver) is static."""
    cond = {"none": lambda: positive, "cfg": lambda: _cat(negative, positive),
            "edit": lambda: _cat(positive, negative, negative)}[mode]()
    if mode == "edit":
        cond_latents = jnp.concatenate([cond_latents, cond_latents, jnp.zeros_like(cond_latents)], axis=0)
    model = unet.merge(unet_values)
    branches = {"none": 1, "cfg": 2, "edit": 3}[mode]
    timesteps, sigmas, scales = tables.timesteps, tables.sigmas, tables.scales
    n = timesteps.shape[0]

    def body(i, carry):
        x, x0_prev = carry
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        model_in = jnp.concatenate([scale_model_input(x, sigma)] * branches, axis=0)
        if cond_latents is not None:
            model_in = jnp.concatenate([model_in, cond_latents], axis=-1)
        eps = model(model_in, timesteps[i], cond.context, cond.pooled, cond.time_ids).astype(jnp.float32)
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

    latents = noise.astype(jnp.float32) * tables.init_noise_sigma
    x, _ = jax.lax.fori_loop(0, n, body, (latents, jnp.zeros_like(latents)))
    return x * tables.final_scale


def sample_latents(unet: UNet2DConditionModel, positive: Conditioning, negative: Conditioning | None = None, *,
                   config: SamplerConfig = SamplerConfig(), noise: jax.Array | None = None,
                   latent_size: tuple[int, int] | None = None, seed: int = 0,
                   cond_latents: jax.Array | None = None, progress: bool = False) -> jax.Array:
    """Denoise from `noise` `[B, h, w, 4]` (or a seeded draw of `latent_size`) -> latents `[B, h, w, 4]`
    (unscaled by the VAE factor's inverse: divide by `scaling_factor` before decoding).

    positive/negative: `Conditioning` with batch B; `negative` (same shapes as `positive`) is required
    when guidance is on. `noise` (float, any float dtype; `latent_size`, if also given, must agree)
    or `latent_size` `(h, w)` with `seed` (an int in [0, 2**32)). cond_latents `[B, h, w, 4]`: the
    stage-2 condition latent (zeros when the U-Net has 8 input channels and none is given).
    `progress`: report each step to the active `seedx_jax.progress` reporter.

    Raises:
      ValueError: before anything is traced, naming the argument: a `config` that is not a
        `SamplerConfig`, conditioning that is not a `Conditioning` of float arrays the U-Net takes
        (or a `negative` shaped unlike `positive`), `noise` / `cond_latents` of another shape, a bad
        `latent_size` or `seed`, NaN or Inf in any array, guidance without `negative`.
    """
    ucfg = unet.config
    if not isinstance(config, SamplerConfig):
        raise ValueError(f"config must be a SamplerConfig, got {type(config).__name__}")
    check_seed(seed)
    positive = _conditioning(positive, "positive")
    if negative is not None:
        negative = _conditioning(negative, "negative")
        if [x.shape for x in negative] != [x.shape for x in positive]:  # they are stacked into one batch
            raise ValueError(f"negative has shapes {[tuple(x.shape) for x in negative]}; they must match "
                             f"positive's {[tuple(x.shape) for x in positive]}")
    b = positive.context.shape[0]
    latent_channels = ucfg.out_channels
    size = None if latent_size is None else _latent_size(latent_size)
    if noise is None:
        if size is None:
            raise ValueError("sample_latents needs `noise` or `latent_size`")
        shape = (b, *size, latent_channels)
    else:
        noise = user_array(noise, "noise")
        shape = tuple(noise.shape)
        if len(shape) != 4 or shape[0] != b or shape[-1] != latent_channels or size not in (None, shape[1:3]):
            hw = "h, w" if size is None else f"{size[0]}, {size[1]}"
            raise ValueError(f"noise has shape {shape}; sample_latents takes [{b}, {hw}, {latent_channels}] "
                             f"(the batch of `positive`)")
    unet.check_inputs((b, *shape[1:3], ucfg.in_channels), positive.context.shape, positive.pooled.shape,
                      positive.time_ids.shape)
    stage2 = ucfg.in_channels == 2 * latent_channels
    if cond_latents is not None:
        if not stage2:
            raise ValueError(f"cond_latents given but the U-Net has in_channels={ucfg.in_channels}; "
                             f"stage 2 needs {2 * latent_channels}")
        cond_latents = user_array(cond_latents, "cond_latents")
        if tuple(cond_latents.shape) != shape:
            raise ValueError(f"cond_latents must be {shape} like the noise, got {tuple(cond_latents.shape)}")
    elif stage2:
        cond_latents = np.zeros(shape, np.float32)

    mode = guidance_mode(config, stage2)
    if mode != "none" and negative is None:
        raise ValueError(f"guidance_scale={config.guidance_scale} needs `negative` conditioning (or guidance_scale=1)")
    if noise is None:
        noise = draw_noise(seed, shape)
    bound = bind(unet)
    return _denoise(bound.spec, bound.values(), noise, positive, negative, cond_latents, sampler_tables(config),
                    mode=mode, solver=config.solver, progress=progress)
