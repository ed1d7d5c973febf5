"""SEED-X's optimizer (src/train/train_seed_x_sft.py): AdamW on every trainable tensor, global-norm clipping, and the
linear-warmup + cosine schedule of `src/train/schedular.py`."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

from seedx_jax.config_base import ConfigBase


@dataclasses.dataclass(frozen=True)
class OptimConfig(ConfigBase):
    """Defaults: SEED-X instruction tuning (lr 1e-4, betas (0.9, 0.98), eps 1e-6, weight decay 0.05 on
    every trainable tensor, clip 1.0, 500 warmup steps, cosine to 5% at step 20000)."""

    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.05
    max_grad_norm: float | None = 1.0  # None: no clipping
    warmup_steps: int = 500
    total_steps: int = 20000
    min_lr_ratio: float = 0.05

    def __post_init__(self):
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(f"OptimConfig: warmup_steps={self.warmup_steps} must be in [0, total_steps="
                             f"{self.total_steps})")
        if self.learning_rate <= 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"OptimConfig: learning_rate={self.learning_rate} must be > 0 and min_lr_ratio="
                             f"{self.min_lr_ratio} in [0, 1]")


def lr_factor(cfg: OptimConfig):
    """step -> multiplier of the learning rate: `step / warmup` during warmup, then
    `max(0, 0.5 * ((1 + m) + (1 - m) * cos(pi * p)))` with `p` the fraction of the decay done."""

    def factor(step):
        step = jnp.asarray(step, jnp.float32)
        warm = step / max(cfg.warmup_steps, 1)
        # SEED-X stops at total_steps; past it we hold the floor (the formula would rise again)
        p = jnp.minimum(1.0, (step - cfg.warmup_steps) / (cfg.total_steps - cfg.warmup_steps))
        m = cfg.min_lr_ratio
        decay = jnp.maximum(0.0, 0.5 * ((1 + m) + (1 - m) * jnp.cos(math.pi * p)))
        return jnp.where(step < cfg.warmup_steps, warm, decay)

    return factor


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformation:
    """torch's `clip_grad_norm_`: scale by `min(1, max_norm / (norm + 1e-6))` (optax's version has no 1e-6)."""

    def update(updates, state, params=None):
        scale = jnp.minimum(1.0, max_norm / (optax.tree.norm(updates) + 1e-6))
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with the scheduled learning rate (the schedule advances once per
    optimizer step, starting at step 0, as torch's LambdaLR)."""
    factor = lr_factor(cfg)
    adamw = optax.adamw(lambda step: cfg.learning_rate * factor(step), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                        weight_decay=cfg.weight_decay)
    if cfg.max_grad_norm is None:
        return adamw
    return optax.chain(clip_by_global_norm(cfg.max_grad_norm), adamw)
