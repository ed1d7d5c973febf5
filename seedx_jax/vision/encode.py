"""Encoding a varying number of views with a bounded number of XLA programs.

An any-res image has 2-5 views (1-4 tiles + the global view) and a batch of images any number. Views
are run in chunks of at most `max(buckets)`, each chunk padded with all-zero views up to the
smallest bucket that holds it; the padded outputs are dropped (views never attend to each other).
Default buckets (1, 2, 4, 8, 16, 32): at most 6 programs per input resolution for any stream.
"""
from __future__ import annotations

import bisect
import collections
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from seedx_jax.nn.bound import GraphSpec, bind
from seedx_jax.numerics import nonfinite_counts
from seedx_jax.vision.anyres import AnyResImage
from seedx_jax.vision.vit import QwenViT

DEFAULT_VIEW_BUCKETS = (1, 2, 4, 8, 16, 32)


def check_views(views, patch_size: int, name: str = "views") -> np.ndarray:
    """`views` (a numpy / jax array or a list of `[S, S, 3]` arrays) as float32 `[V, S, S, 3]` on the host.

    Raises:
      ValueError: naming `name` (before anything is traced), when the views are not floating point
        (uint8 pixels must go through `image_transform` / `process_anyres` first), hold NaN / Inf, or
        are not `[V >= 1, S, S, 3]` NHWC with S a multiple of `patch_size`.
    """
    if isinstance(views, AnyResImage):
        raise ValueError(f"{name} is an AnyResImage; pass its .pixels [V, S, S, 3]")
    views = np.asarray(views)
    if not jnp.issubdtype(views.dtype, jnp.floating):
        raise ValueError(f"{name} has dtype {views.dtype}; the ViT takes CLIP-normalised float views "
                         f"(image_transform / process_anyres)")
    if (views.ndim != 4 or 0 in views.shape or views.shape[-1] != 3 or views.shape[1] != views.shape[2]
            or views.shape[1] % patch_size):
        raise ValueError(f"{name} has shape {views.shape}; the ViT takes [V >= 1, S, S, 3] (NHWC, square, "
                         f"S a multiple of {patch_size})")
    nan, inf = nonfinite_counts(views)
    if nan or inf:
        raise ValueError(f"{name} holds {nan} NaN and {inf} infinite values")
    return views.astype(np.float32)


_TRACES: collections.Counter = collections.Counter()  # GraphSpec -> programs traced


@functools.partial(jax.jit, static_argnums=0)
def _encode(spec: GraphSpec, values, views):
    _TRACES[spec] += 1
    return spec.merge(values)(views)


class ViewEncoder:
    """`encoder(views [V, S, S, 3]) -> [V, 256, output_dim]` with V padded to a bucket size."""

    def __init__(self, vit: QwenViT, buckets: Sequence[int] = DEFAULT_VIEW_BUCKETS):
        if not buckets or any(b < 1 for b in buckets):
            raise ValueError(f"view buckets must be positive sizes, got {tuple(buckets)}")
        self.buckets = tuple(sorted(set(buckets)))
        self.patch_size = vit.config.patch_size
        self._vit = bind(vit)

    @property
    def traces(self) -> int:
        """Programs traced so far for this ViT's structure (one per (bucket, resolution); shared by every
        encoder of a ViT with the same structure)."""
        return _TRACES[self._vit.spec]

    def __call__(self, views) -> jax.Array:
        """views: float `[V, S, S, 3]` (`check_views`; a numpy / jax array or a list of views)."""
        views = check_views(views, self.patch_size)
        outputs = []
        largest = self.buckets[-1]
        for start in range(0, views.shape[0], largest):
            chunk = views[start:start + largest]
            size = self.buckets[bisect.bisect_left(self.buckets, chunk.shape[0])]
            padded = np.concatenate([chunk, np.zeros((size - len(chunk), *chunk.shape[1:]), np.float32)])
            outputs.append(_encode(self._vit.spec, self._vit.values(), padded)[:len(chunk)])
        return outputs[0] if len(outputs) == 1 else jnp.concatenate(outputs)

    def encode_images(self, images: Sequence[AnyResImage]) -> list[jax.Array]:
        """All views of several any-res images in as few calls as possible; features per image."""
        if not images:
            return []
        features = self(np.concatenate([im.pixels for im in images]))
        splits = np.cumsum([im.num_views for im in images])[:-1]
        return jnp.split(features, splits)
