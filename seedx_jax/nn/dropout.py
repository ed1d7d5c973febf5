"""Inverted dropout with cheap masks: four 16-bit draws per Threefry-2x32 call.

`jax.random.bernoulli` spends one Threefry call (64 random bits) per element, folds them to 32 bits and
converts them to a float; at LoRA's rate of 0.05 that was ~18% of an SFT step on CPU (and twice under
full remat, which redraws the masks in the backward pass). Here each call's 64 bits become four
independent 16-bit draws compared against an integer threshold: a quarter of the hashing and no float
conversion. The counters are the element indices, so the draw is elementwise and partitions like its
input. Masks are a deterministic function of the key, as with `jax.random`, but not the same bits.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

_DRAW_BITS = 16
_DRAWS_PER_CALL = 4  # Threefry-2x32 returns two 32-bit words


def keep_mask(rng: jax.Array, shape: tuple[int, ...], rate: float) -> jax.Array:
    """bool `shape`, each element True with probability `1 - rate` (rate rounded to a multiple of 2^-16).

    `rng`: a key of any implementation (typed or raw uint32). Raises ValueError for a rate outside
    [0, 1) or a mask of 2^34 elements or more (the counters are 32-bit).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate={rate} must be in [0, 1)")
    *lead, last = shape
    calls = -(-last // _DRAWS_PER_CALL)
    if int(np.prod(lead, dtype=np.int64)) * calls >= 2 ** 32:
        raise ValueError(f"dropout mask of shape {shape} is too large for 32-bit counters")
    k1, k2 = jax.random.bits(rng, (2,), jnp.uint32)  # a Threefry key pair from any key
    counter_shape = (*lead, calls)
    index = jnp.zeros(counter_shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(counter_shape))):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, counter_shape, axis) * np.uint32(stride)
        stride *= counter_shape[axis]
    hi, lo = threefry2x32_p.bind(k1, k2, jnp.zeros_like(index), index)
    low_half = np.uint32(2 ** _DRAW_BITS - 1)
    draws = jnp.concatenate([hi & low_half, hi >> _DRAW_BITS, lo & low_half, lo >> _DRAW_BITS], axis=-1)
    threshold = np.uint32(round(rate * 2 ** _DRAW_BITS))
    return draws[..., :last] >= threshold


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Zero each element of x `[..., F]` with probability `rate`, scale the rest by `1 / (1 - rate)`
    (torch `nn.Dropout` in training mode); same shape and dtype."""
    keep = keep_mask(rng, x.shape, rate)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
