"""One jitted optimizer step over the trainable part of an nnx model.

The model is split once into (graphdef, trainable params, frozen rest) by a filter, so frozen
parameters get no gradients and no optimizer state. A step takes `accumulation` micro-batches
(a leading axis on every batch leaf), sums their gradients in a `lax.scan`, averages them (as
accelerate's gradient accumulation does), and applies the optimizer - unless the loss or any
gradient is not finite: then nothing changes, `nonfinite` counts the skip and `streak` the skips in a
row (the loop stops a run that no longer recovers). The train state is donated, so parameters and
optimizer state are updated in place.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seedx_jax import sharding
from seedx_jax.sharding import Rules

LossFn = Callable[[nnx.Module, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


class TrainState(NamedTuple):
    params: nnx.State  # the trainable variables
    opt_state: optax.OptState
    step: jax.Array  # optimizer steps taken (int32)
    nonfinite: jax.Array  # steps skipped for a non-finite loss or gradient (int32)
    streak: jax.Array  # of those, the ones since the last finite step (int32; 0 after a finite step)
    rng: jax.Array  # key for dropout, split once per micro-batch


def split_trainable(model: nnx.Module, trainable) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, trainable params, everything else) by an nnx filter (e.g. `lora.trainable_filter`)."""
    return nnx.split(model, trainable, ...)


def init_state(params: nnx.State, optimizer: optax.GradientTransformation, rng: jax.Array) -> TrainState:
    step, nonfinite, streak = (jnp.zeros((), jnp.int32) for _ in range(3))  # distinct buffers: the state is donated
    return TrainState(params, optimizer.init(params), step, nonfinite, streak, rng)


def state_shardings(state: TrainState, rest: nnx.State, optimizer: optax.GradientTransformation, mesh: Mesh,
                    rules: Rules | None = None) -> tuple[TrainState, nnx.State]:
    """Explicit shardings from the rules table: parameters and their optimizer moments alike, counters
    and the key replicated."""
    params = sharding.state_shardings(state.params, mesh, rules)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt = optax.tree_map_params(optimizer, lambda _, s: s, state.opt_state, params,
                                transform_non_params=lambda _: replicated)
    return (TrainState(params, opt, replicated, replicated, replicated, replicated),
            sharding.state_shardings(rest, mesh, rules))


def batch_shardings(batch, mesh: Mesh, rules: Rules | None = None):
    """`[A, micro, ...]` leaves: the micro-batch axis over the mesh axes of the `batch` logical axis
    (`[A]` leaves, per-micro-batch scalars, are replicated)."""
    def one(x):
        if x.ndim < 2:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, sharding.logical_to_spec((None, "batch") + (None,) * (x.ndim - 2), rules,
                                                            mesh=mesh, shape=x.shape, name="batch"))
    return jax.tree.map(one, batch)


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, optimizer: optax.GradientTransformation, *,
                    shardings: tuple[TrainState, nnx.State] | None = None, batch_sharding=None):
    """`step(state, rest, batch) -> (state, metrics)`, jitted with `state` donated.

    `loss_fn(model, micro_batch, rng) -> (loss, aux scalars)`; `batch` leaves are `[A, micro, ...]`.
    Metrics: the mean loss and aux values over the A micro-batches, `grad_norm` (before clipping),
    `finite` (1.0 when the update was applied), `nonfinite_streak` (the new state's `streak`, int32:
    the loop reads it without touching the donated state). `shardings` (from `state_shardings`) and
    `batch_sharding` (from `batch_shardings`) make the in/out shardings explicit.
    """

    def grads_of(params, rest, micro, rng):
        def loss(p):
            return loss_fn(nnx.merge(graphdef, p, rest), micro, rng)

        (value, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
        return value, aux, grads

    def step(state: TrainState, rest: nnx.State, batch) -> tuple[TrainState, dict[str, jax.Array]]:
        num_micro = jax.tree.leaves(batch)[0].shape[0]
        rng, *keys = jax.random.split(state.rng, num_micro + 1)

        def accumulate(total, inputs):
            micro, key = inputs
            value, aux, grads = grads_of(state.params, rest, micro, key)
            return jax.tree.map(jnp.add, total, (value, aux, grads)), None

        shapes = jax.eval_shape(grads_of, state.params, rest, jax.tree.map(lambda x: x[0], batch), keys[0])
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (value, aux, grads), _ = jax.lax.scan(accumulate, zero, (batch, jnp.stack(keys)))
        value, aux, grads = jax.tree.map(lambda x: x / num_micro, (value, aux, grads))
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(value) & jnp.isfinite(grad_norm)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        def keep(new, old):
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        streak = jnp.where(finite, 0, state.streak + 1)
        new_state = TrainState(keep(params, state.params), keep(opt_state, state.opt_state),
                               state.step + finite.astype(jnp.int32), state.nonfinite + (~finite).astype(jnp.int32),
                               streak, rng)
        metrics = {"loss": value, **aux, "grad_norm": grad_norm, "finite": finite.astype(jnp.float32),
                   "nonfinite_streak": streak}
        return new_state, metrics

    if shardings is None:
        return jax.jit(step, donate_argnums=0)
    state_sh, rest_sh = shardings
    replicated = state_sh.step
    return jax.jit(step, donate_argnums=0, in_shardings=(state_sh, rest_sh, batch_sharding),
                   out_shardings=(state_sh, replicated))
