"""Euler sampling exactly as diffusers' EulerDiscreteScheduler with the SDXL-base config (SEEDX.md §9.6).

The schedule (timesteps, sigmas) is computed once on the host with diffusers' float32/float64
arithmetic; `scale_model_input` and `euler_step` are pure functions that run inside a jitted loop
(`sigmas[i]` indexed by the loop counter). s_churn is 0 (SDXL): the step is deterministic.

Timesteps equal diffusers' exactly; sigmas agree to a few float32 ulps, not bit for bit: torch fills
float32 `linspace` in SIMD blocks (its rounding depends on the CPU's vector width) and its
vectorised sqrt (SLEEF) is not correctly rounded, so torch itself differs across machines.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seedx_jax.config_base import ConfigBase


@dataclasses.dataclass(frozen=True)
class NoiseScheduleConfig(ConfigBase):
    """SDXL base `scheduler_config.json` defaults."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"  # scaled_linear | linear
    timestep_spacing: str = "leading"  # leading | linspace | trailing
    steps_offset: int = 1

    def __post_init__(self):
        if self.beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(f"NoiseScheduleConfig.beta_schedule={self.beta_schedule!r} is not one of "
                             "('scaled_linear', 'linear')")
        if self.timestep_spacing not in ("leading", "linspace", "trailing"):
            raise ValueError(f"NoiseScheduleConfig.timestep_spacing={self.timestep_spacing!r} is not one "
                             "of ('leading', 'linspace', 'trailing')")


def _linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(..., dtype=float32): float32 step, filled from both ends."""
    start32, end32 = np.float32(start), np.float32(end)
    step = (end32 - start32) / np.float32(steps - 1)
    idx = np.arange(steps)
    front = start32 + step * idx.astype(np.float32)
    back = end32 - step * (steps - idx - 1).astype(np.float32)
    return np.where(idx < steps // 2, front, back).astype(np.float32)


def alphas_cumprod(cfg: NoiseScheduleConfig) -> np.ndarray:
    """`[num_train_timesteps]` float32 cumulative products of (1 - beta)."""
    n = cfg.num_train_timesteps
    if cfg.beta_schedule == "scaled_linear":
        betas = _linspace_f32(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n) ** 2
    else:
        betas = _linspace_f32(cfg.beta_start, cfg.beta_end, n)
    return np.cumprod((np.float32(1.0) - betas).astype(np.float64)).astype(np.float32)  # torch: double accumulator


@dataclasses.dataclass(frozen=True)
class EulerSchedule:
    timesteps: np.ndarray  # [n] float32, what the U-Net receives
    sigmas: np.ndarray  # [n + 1] float32, last one 0
    init_noise_sigma: float  # initial latents = noise * init_noise_sigma

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)


def euler_schedule(cfg: NoiseScheduleConfig, num_steps: int) -> EulerSchedule:
    """diffusers `EulerDiscreteScheduler.set_timesteps(num_steps)` (linear sigma interpolation)."""
    n_train = cfg.num_train_timesteps
    if not 1 <= num_steps <= n_train:
        raise ValueError(f"num_steps={num_steps} must be in [1, {n_train}]")
    if cfg.timestep_spacing == "leading":
        ratio = n_train // num_steps
        timesteps = (np.arange(num_steps) * ratio).round()[::-1].astype(np.float32) + cfg.steps_offset
    elif cfg.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n_train - 1, num_steps, dtype=np.float32)[::-1].copy()
    else:
        timesteps = np.arange(n_train, 0, -n_train / num_steps).round().astype(np.float32) - 1
    acp = alphas_cumprod(cfg)
    train_sigmas = np.sqrt((np.float32(1.0) - acp) / acp)  # float32, as the torch tensor math
    sigmas = np.interp(timesteps, np.arange(n_train), train_sigmas)
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    max_sigma = sigmas.max()
    init = max_sigma if cfg.timestep_spacing in ("linspace", "trailing") else (max_sigma ** 2 + 1) ** 0.5
    return EulerSchedule(timesteps=timesteps.astype(np.float32), sigmas=sigmas, init_noise_sigma=float(init))


def scale_model_input(sample: jax.Array, sigma: jax.Array) -> jax.Array:
    """`sample / sqrt(sigma^2 + 1)`: the U-Net input at noise level sigma."""
    return sample / jnp.sqrt(sigma ** 2 + 1).astype(sample.dtype)


def euler_step(eps: jax.Array, sample: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One Euler step for an epsilon prediction, in float32, returned in `eps.dtype` (as diffusers)."""
    x = sample.astype(jnp.float32)
    x0 = x - sigma * eps
    derivative = (x - x0) / sigma
    return (x + derivative * (sigma_next - sigma)).astype(eps.dtype)


def classifier_free_guidance(eps_uncond: jax.Array, eps_cond: jax.Array, scale: float) -> jax.Array:
    """`eps_u + scale * (eps_c - eps_u)` (SEEDX.md §9.5; the negative is the ViT zero-image branch)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def edit_guidance(eps_text: jax.Array, eps_image: jax.Array, eps_uncond: jax.Array, sample: jax.Array,
                  sigma: jax.Array, text_scale: float = 7.5, image_scale: float = 1.5) -> jax.Array:
    """SEED-X-Edit 3-way guidance, in x0 space as the official pipeline (SEEDX.md §9.7).

    Branches: text = (positive features, condition latent), image = (negative, condition latent),
    uncond = (negative, zeros). Returns the guided epsilon.
    """
    x0_t, x0_i, x0_u = (sample - sigma * e for e in (eps_text, eps_image, eps_uncond))
    x0 = x0_u + text_scale * (x0_t - x0_i) + image_scale * (x0_i - x0_u)
    return (x0 - sample) / (-sigma)
