"""The training noise schedule (DDPM forward process, epsilon target) for the de-tokenizer stages."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from seedx_jax.diffusion.schedulers import NoiseScheduleConfig


def add_noise(latents: jax.Array, noise: jax.Array, timesteps: jax.Array, acp: jax.Array) -> jax.Array:
    """`sqrt(acp[t]) * x0 + sqrt(1 - acp[t]) * noise` per sample (diffusers `DDPMScheduler.add_noise`).

    latents, noise `[N, ...]`; timesteps `[N]` int; acp `[num_train_timesteps]` from
    `seedx_jax.diffusion.schedulers.alphas_cumprod` (the same betas as sampling).
    """
    a = acp.astype(latents.dtype)[timesteps].reshape(-1, *([1] * (latents.ndim - 1)))
    return jnp.sqrt(a) * latents + jnp.sqrt(1 - a) * noise


def sample_timesteps(key: jax.Array, batch_size: int, cfg: NoiseScheduleConfig = NoiseScheduleConfig()) -> jax.Array:
    """Uniform training timesteps in [0, num_train_timesteps), `[batch_size]` int32."""
    return jax.random.randint(key, (batch_size,), 0, cfg.num_train_timesteps, dtype=jnp.int32)

