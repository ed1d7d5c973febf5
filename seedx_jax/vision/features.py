"""Feature-space helpers around the ViT output (src/models/mllm/seed_x.py)."""
import jax
import jax.numpy as jnp


def vit_down(features: jax.Array, pool: int = 4) -> jax.Array:
    """`[N, 256, C]` -> `[N, 64, C]`: mean of each run of 4 consecutive raster tokens (1x4 strips)."""
    n, length, c = features.shape
    if length % pool:
        raise ValueError(f"vit_down: {length} tokens are not divisible by pool={pool}")
    return features.reshape(n, length // pool, pool, c).mean(axis=2)


def patch_position_term(positions: jax.Array, table: jax.Array) -> jax.Array:
    """positions `[N, 2]` (x, y), table `[4, D]` -> `[N, D]` = (x P0 + y P1 + (1-x) P2 + (1-y) P3) / 2.

    Added to every resampled token of that view; positions are cast to the table dtype first.
    """
    pos = positions.astype(table.dtype)
    coeffs = jnp.concatenate([pos, 1 - pos], axis=-1) / 2  # [x, y, 1-x, 1-y] / 2
    return coeffs @ table
