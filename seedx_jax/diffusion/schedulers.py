"""Samplers' noise schedules and steps: diffusers' Euler, DDIM and DPM-Solver++(2M) with the SDXL config.

Every solver runs in the same "sigma" form as diffusers' EulerDiscreteScheduler (docs/detokenizer.md):
latents are `x0 + sigma * eps`, the U-Net sees `x / sqrt(sigma^2 + 1)` (the usual variance-
preserving latent) and receives timestep t. In this form a deterministic DDIM step is exactly an
Euler step, and DPM-Solver++ needs only sigma ratios; the schedules differ (DDIM ends at the
sigma of `alphas_cumprod[0]` unless `set_alpha_to_one`, DPM-Solver++ spaces `leading` timesteps
by `1000 // (n + 1)`). Schedules are computed once on the host with diffusers' float32/float64
arithmetic; the steps are pure functions for a jitted loop.

Timesteps equal diffusers' exactly; sigmas agree to a few float32 ulps, not bit for bit: torch fills
float32 `linspace` in SIMD blocks (its rounding depends on the CPU's vector width) and its
vectorised sqrt (SLEEF) is not correctly rounded, so torch itself differs across machines.
"""
from __future__ import annotations

import dataclasses
import functools

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
    set_alpha_to_one: bool = False  # DDIM only: final step to alphas_cumprod = 1 (else alphas_cumprod[0])

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


SOLVERS = ("euler", "ddim", "dpmpp_2m")


@dataclasses.dataclass(frozen=True)
class Schedule:
    solver: str  # one of SOLVERS
    timesteps: np.ndarray  # [n] float32, what the U-Net receives
    sigmas: np.ndarray  # [n + 1] float32; step i goes from sigmas[i] to sigmas[i + 1]
    init_noise_sigma: float  # initial latents = noise * init_noise_sigma

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    @property
    def final_scale(self) -> float:
        """diffusers returns `x / sqrt(sigma_last^2 + 1)`: 1 unless DDIM stops above sigma 0."""
        return float(1.0 / np.sqrt(np.float64(self.sigmas[-1]) ** 2 + 1))


def _check_steps(cfg: NoiseScheduleConfig, num_steps: int) -> None:
    if not 1 <= num_steps <= cfg.num_train_timesteps:
        raise ValueError(f"num_steps={num_steps} must be in [1, {cfg.num_train_timesteps}]")


def train_sigmas(cfg: NoiseScheduleConfig) -> np.ndarray:
    """`[num_train_timesteps]` float32 sqrt((1 - acp) / acp), as the torch tensor math."""
    acp = alphas_cumprod(cfg)
    return np.sqrt((np.float32(1.0) - acp) / acp)


def euler_schedule(cfg: NoiseScheduleConfig, num_steps: int) -> Schedule:
    """diffusers `EulerDiscreteScheduler.set_timesteps(num_steps)` (linear sigma interpolation)."""
    _check_steps(cfg, num_steps)
    n_train = cfg.num_train_timesteps
    if cfg.timestep_spacing == "leading":
        ratio = n_train // num_steps
        timesteps = (np.arange(num_steps) * ratio).round()[::-1].astype(np.float32) + cfg.steps_offset
    elif cfg.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n_train - 1, num_steps, dtype=np.float32)[::-1].copy()
    else:
        timesteps = np.arange(n_train, 0, -n_train / num_steps).round().astype(np.float32) - 1
    sigmas = np.interp(timesteps, np.arange(n_train), train_sigmas(cfg))
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    max_sigma = sigmas.max()
    init = max_sigma if cfg.timestep_spacing in ("linspace", "trailing") else (max_sigma ** 2 + 1) ** 0.5
    return Schedule("euler", timesteps.astype(np.float32), sigmas, float(init))


def ddim_schedule(cfg: NoiseScheduleConfig, num_steps: int) -> Schedule:
    """diffusers `DDIMScheduler` (eta 0, epsilon): steps from t to t - 1000 // n, the last one to
    `alphas_cumprod[0]` (or 1 with `set_alpha_to_one`)."""
    _check_steps(cfg, num_steps)
    n_train, ratio = cfg.num_train_timesteps, cfg.num_train_timesteps // num_steps
    if cfg.timestep_spacing == "leading":
        timesteps = (np.arange(num_steps) * ratio).round()[::-1].astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n_train - 1, num_steps).round()[::-1].astype(np.int64)
    else:
        timesteps = np.round(np.arange(n_train, 0, -n_train / num_steps)).astype(np.int64) - 1
    # diffusers steps to t - ratio, which only lands on the next timestep for even spacings
    if np.any(timesteps[1:] != timesteps[:-1] - ratio):
        raise ValueError(f"ddim with timestep_spacing={cfg.timestep_spacing!r} and num_steps={num_steps} takes "
                         "uneven steps in diffusers; use timestep_spacing='leading'")
    if timesteps.max() >= n_train:  # leading spacing + steps_offset: diffusers indexes past its table here
        most = max(n for n in range(1, n_train + 1) if (n - 1) * (n_train // n) + cfg.steps_offset < n_train)
        raise ValueError(f"ddim takes at most {most} steps with steps_offset={cfg.steps_offset} "
                         f"(num_steps={num_steps} would start at timestep {timesteps.max()})")
    sig = train_sigmas(cfg)
    last = 0.0 if cfg.set_alpha_to_one else sig[0]
    sigmas = np.concatenate([sig[timesteps], [last]]).astype(np.float32)
    return Schedule("ddim", timesteps.astype(np.float32), sigmas, float(np.sqrt(np.float64(sigmas[0]) ** 2 + 1)))


def dpm_solver_schedule(cfg: NoiseScheduleConfig, num_steps: int) -> Schedule:
    """diffusers `DPMSolverMultistepScheduler` (dpmsolver++, order 2, midpoint, final sigma 0)."""
    _check_steps(cfg, num_steps)
    n_train = cfg.num_train_timesteps
    if cfg.timestep_spacing == "leading":
        ratio = n_train // (num_steps + 1)
        timesteps = (np.arange(num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg.steps_offset
    elif cfg.timestep_spacing == "linspace":
        timesteps = np.linspace(0, n_train - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
    else:
        timesteps = np.arange(n_train, 0, -n_train / num_steps).round().astype(np.int64) - 1
    sigmas = np.interp(timesteps, np.arange(n_train), train_sigmas(cfg))
    sigmas = np.concatenate([sigmas, [0.0]]).astype(np.float32)
    # diffusers starts from unit-variance latents (init_noise_sigma 1): sigma form multiplies by sqrt(s0^2 + 1)
    return Schedule("dpmpp_2m", timesteps.astype(np.float32), sigmas, float(np.sqrt(np.float64(sigmas[0]) ** 2 + 1)))


@functools.lru_cache(maxsize=64)
def make_schedule(solver: str, cfg: NoiseScheduleConfig, num_steps: int) -> Schedule:
    """The schedule of `solver` (one of SOLVERS), computed once per arguments (the result is shared:
    its arrays are read-only). Raises ValueError for an unknown solver or the solver's own limits."""
    builders = {"euler": euler_schedule, "ddim": ddim_schedule, "dpmpp_2m": dpm_solver_schedule}
    if solver not in builders:
        raise ValueError(f"solver={solver!r} is not one of {SOLVERS}")
    schedule = builders[solver](cfg, num_steps)
    for table in (schedule.timesteps, schedule.sigmas):
        table.flags.writeable = False
    return schedule


def scale_model_input(sample: jax.Array, sigma: jax.Array) -> jax.Array:
    """`sample / sqrt(sigma^2 + 1)`: the U-Net input at noise level sigma."""
    return sample / jnp.sqrt(sigma ** 2 + 1).astype(sample.dtype)


def euler_step(eps: jax.Array, sample: jax.Array, sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """One Euler step for an epsilon prediction, in float32, returned in `eps.dtype` (as diffusers)."""
    x = sample.astype(jnp.float32)
    x0 = x - sigma * eps
    derivative = (x - x0) / sigma
    return (x + derivative * (sigma_next - sigma)).astype(eps.dtype)


def dpmpp_2m_step(eps: jax.Array, sample: jax.Array, x0_prev: jax.Array, sigma_prev: jax.Array,
                  sigma: jax.Array, sigma_next: jax.Array) -> jax.Array:
    """Second-order DPM-Solver++ (midpoint) in sigma form, float32, returned in `eps.dtype`.

    With lambda = -log(sigma): h = log(sigma / sigma_next), r = log(sigma_prev / sigma) / h,
    D = x0 + (x0 - x0_prev) / (2 r), x_next = (sigma_next / sigma) x + (1 - sigma_next / sigma) D.
    (The first-order DPM-Solver++ step is the Euler/DDIM step.)
    """
    x = sample.astype(jnp.float32)
    x0 = x - sigma * eps
    h = jnp.log(sigma / sigma_next)
    r = jnp.log(sigma_prev / sigma) / h
    d = x0 + (x0 - x0_prev.astype(jnp.float32)) / (2 * r)
    ratio = sigma_next / sigma
    return (ratio * x + (1 - ratio) * d).astype(eps.dtype)
