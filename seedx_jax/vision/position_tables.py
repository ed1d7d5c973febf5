"""Position tables: the fixed 2-D sincos table and PyTorch-exact bicubic resizing (qwen_visual.py).

`jax.image.resize("cubic")` uses Keys a=-0.5 with antialiasing, unlike torch's
`F.interpolate(mode="bicubic", align_corners=False)` (A = -0.75, clamped taps, no antialias), so the
torch rule is written here: 4 taps per output along the width, then along the height, added in
torch's order (tables are small; a matmul form sums in another order and drifts by ~1e-6).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_A = np.float32(-0.75)


def _fma(a, b, c) -> np.ndarray:
    """float32 fused multiply-add (one rounding): the product of two float32 is exact in float64."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The 4 tap weights [K2(t+1), K1(t), K1(1-t), K2(2-t)] in float32.

    Evaluated with the multiply-adds fused as in torch's compiled CPU kernel: matching its float32
    weights to the last bit or so (1.2e-7) needs this; plain float32 arithmetic is off by up to 1e-6.
    """
    one = np.float32(1.0)

    def k1(x):
        return _fma(_fma(_A + 2, x, -(_A + 3)) * x, x, one)

    def k2(x):
        return _fma(_fma(_fma(_A, x, -5 * _A), x, 8 * _A), x, -4 * _A)

    return np.stack([k2(t + one), k1(t), k1(one - t), k2((one - t) + one)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices `[dst, 4]`, weights `[dst, 4]` float32) of torch's bicubic rule, align_corners=False.

    Source coordinates and coefficients are computed in float32 as torch does (fused multiply-adds);
    indices are clamped into [0, src - 1], so border taps repeat.
    """
    scale = np.float32(src) / np.float32(dst)
    pos = _fma(scale, np.arange(dst, dtype=np.float32) + np.float32(0.5), np.float32(-0.5))  # not clamped
    base = np.floor(pos)
    weights = _cubic_weights((pos - base).astype(np.float32))
    idx = np.clip(base.astype(np.int64)[:, None] + np.arange(-1, 3), 0, src - 1).astype(np.int32)
    idx.setflags(write=False)
    weights.setflags(write=False)
    return idx, weights


def _interp_1d(x: jax.Array, axis: int, src: int, dst: int) -> jax.Array:
    """The 4-tap sum along `axis`, taps added left to right as torch's CPU kernel does."""
    idx, weights = bicubic_taps(src, dst)
    shape = [1] * x.ndim
    shape[axis] = dst
    out = None
    for tap in range(4):
        term = jnp.take(x, jnp.asarray(idx[:, tap]), axis=axis) * jnp.asarray(weights[:, tap]).reshape(shape)
        out = term if out is None else out + term
    return out


def resize_table(table: jax.Array, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> jax.Array:
    """Table `[src_h * src_w, C]` (row-major grid) -> `[dst_h * dst_w, C]`, computed in float32.

    Returned in float32; callers cast to their compute dtype (docs/architecture.md#position-table-interpolation).
    """
    table = table.astype(jnp.float32)
    if tuple(src_hw) == tuple(dst_hw):
        return table
    (sh, sw), (dh, dw) = src_hw, dst_hw
    rows = _interp_1d(table.reshape(sh, sw, -1), 1, sw, dw)  # along the width, then the height
    return _interp_1d(rows, 0, sh, dh).reshape(dh * dw, -1)


def sincos_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE 2-D sincos table `[g*g, D]`: first half encodes the column (x), second half the row (y)."""
    if embed_dim % 4:
        raise ValueError(f"sincos table dim {embed_dim} must be divisible by 4")
    half = embed_dim // 2
    omega = 1.0 / 10000 ** (np.arange(half // 2, dtype=np.float32) / (half / 2.0))

    def embed_1d(pos):
        angles = np.outer(pos.astype(np.float32), omega.astype(np.float32))
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    return np.concatenate([embed_1d(cols), embed_1d(rows)], axis=1).astype(np.float32)
