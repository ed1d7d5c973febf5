"""Position tables: the fixed 2-D sincos table and PyTorch-exact bicubic resizing (SEEDX.md §3.4, §4.3).

`jax.image.resize("cubic")` uses Keys a=-0.5 with antialiasing, unlike torch's
`F.interpolate(mode="bicubic", align_corners=False)` (A = -0.75, clamped taps, no antialias), so the
torch rule is written here as two small interpolation matrices: out = R @ table @ C^T per channel.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

_A = np.float32(-0.75)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """The 4 tap weights for fractional offsets t, in float32 with torch's operation order."""
    one = np.float32(1.0)

    def k1(x):
        return ((_A + 2) * x - (_A + 3)) * x * x + one

    def k2(x):
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return np.stack([k2(t + one), k1(t), k1(one - t), k2((one - t) + one)], axis=-1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(src: int, dst: int) -> np.ndarray:
    """`[dst, src]` float32 matrix M with `resize_1d(v) = M @ v` (torch bicubic, align_corners=False).

    Source coordinates and coefficients are computed in float32 as torch does, so a resize by a
    non-integer factor matches it to float32 rounding.
    """
    scale = np.float32(src) / np.float32(dst)
    pos = scale * (np.arange(dst, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)  # not clamped
    base = np.floor(pos)
    weights = _cubic_weights((pos - base).astype(np.float32))
    matrix = np.zeros((dst, src), np.float32)
    for tap in range(4):
        idx = np.clip(base.astype(np.int64) - 1 + tap, 0, src - 1)  # clamped taps accumulate
        np.add.at(matrix, (np.arange(dst), idx), weights[:, tap])
    matrix.setflags(write=False)
    return matrix


def resize_table(table: jax.Array, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> jax.Array:
    """Table `[src_h * src_w, C]` (row-major grid) -> `[dst_h * dst_w, C]`, computed in float32.

    Returned in float32; callers cast to their compute dtype (SEEDX.md §12.33).
    """
    table = table.astype(jnp.float32)
    if tuple(src_hw) == tuple(dst_hw):
        return table
    (sh, sw), (dh, dw) = src_hw, dst_hw
    grid = table.reshape(sh, sw, -1)
    rows, cols = jnp.asarray(bicubic_matrix(sh, dh)), jnp.asarray(bicubic_matrix(sw, dw))
    out = jnp.einsum("is,stc,jt->ijc", rows, grid, cols, precision=jax.lax.Precision.HIGHEST)
    return out.reshape(dh * dw, -1)


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
