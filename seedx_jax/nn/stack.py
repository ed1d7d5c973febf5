"""Repeated layers: stacked parameters scanned with `lax.scan`, or an unrolled list, plus remat.

Stacked parameters get a leading `layers` logical axis, so the sharding rules table sees it.
Both layouts run the same per-layer step function, so scanned and unscanned models agree exactly.
"""
from __future__ import annotations

from typing import Any, Callable, TypeVar

import jax
import jax.numpy as jnp
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

LOGICAL_AXES = "logical_axes"  # Variable metadata key holding the logical axis names

_REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_saveable,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_policy(name: str):
    """Checkpoint policy by name: none (no remat) | full | dots | dots_no_batch."""
    if name not in _REMAT_POLICIES:
        raise ValueError(f"remat={name!r} is not one of {sorted(_REMAT_POLICIES)}")
    return _REMAT_POLICIES[name]


def stack_layers(make: Callable[[nnx.Rngs], M], num_layers: int, rngs: nnx.Rngs) -> M:
    """One module whose every parameter has a leading `[num_layers]` axis (logical name `layers`)."""

    @nnx.vmap(in_axes=0, out_axes=0,
              transform_metadata={nnx.PARTITION_NAME: "layers", LOGICAL_AXES: "layers"})
    def make_stacked(key):
        return make(nnx.Rngs(key))

    return make_stacked(jax.random.split(rngs.params(), num_layers))


Step = Callable[[nnx.Module, Any, Any], tuple[Any, Any]]


def apply_layers(layers: nnx.Module | nnx.List, step: Step, carry: Any, xs: Any, *,
                 scan: bool, remat: str = "none") -> tuple[Any, Any]:
    """Run `carry, y = step(layer, carry, x)` over the layers; returns (carry, ys stacked on axis 0).

    `layers` is a stacked module (`scan=True`) or an `nnx.List` of modules (`scan=False`); `xs` is
    a pytree with a leading layer axis (e.g. the KV cache, per-layer dropout keys) or None.
    """
    policy = remat_policy(remat)  # validates the name

    def pure_step(graphdef, carry, layer_state, x):
        return step(nnx.merge(graphdef, layer_state), carry, x)

    if remat != "none":
        pure_step = jax.checkpoint(pure_step, policy=policy, prevent_cse=not scan,
                                   static_argnums=(0,))

    if scan:
        graphdef, state = nnx.split(layers)
        return jax.lax.scan(lambda c, inp: pure_step(graphdef, c, *inp), carry, (state, xs))

    ys = []
    for i, layer in enumerate(layers):
        graphdef, state = nnx.split(layer)
        x = None if xs is None else jax.tree.map(lambda a: a[i], xs)
        carry, y = pure_step(graphdef, carry, state, x)
        ys.append(y)
    return carry, (None if ys[0] is None else jax.tree.map(lambda *a: jnp.stack(a), *ys))
