"""Stream a PyTorch checkpoint into an Orbax checkpoint, one unit of tensors at a time.

Each tensor is read, transformed and placed straight onto its target sharding: a whole variable with
`make_array_from_callback` (each process builds only its own shards), a large stacked variable row
by row into a device buffer updated in place (a jitted, donated `dynamic_update_index_in_dim`), so
the host holds one source tensor at a time and the devices one stacked variable beyond what is
already written. Stacks under `HOST_STACK_BYTES` are gathered on the host and placed whole, which
saves one compile per shape. Finished variables are appended to the checkpoint with Orbax partial
saves whenever `flush_bytes` have accumulated, then dropped. Peak host memory on a CPU-only host
(where device buffers are host memory) is therefore about twice the largest stacked variable - the
stack being filled, and Orbax's host copy while it writes one - plus `flush_bytes`, not the
checkpoint size. Each source tensor's NaN and Inf values are counted on the host copy just read: the
first non-finite tensor stops the conversion unless `allow_nonfinite` lets it through, listed.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from seedx_jax.exits import interrupts_deferred
from seedx_jax.nn.buffer import Buffer
from seedx_jax.numerics import nonfinite_counts
from seedx_jax.progress import Progress
from seedx_jax.sharding import Rules, abstract_model
from seedx_jax.sources import SourceError, TensorSource, locate
from seedx_jax.weights import LoadReport, Rule, fill, path_str, plan_load


@functools.partial(jax.jit, donate_argnums=0)
def _set_row(stack: jax.Array, row: jax.Array, index: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_index_in_dim(stack, row, index, 0)


@functools.lru_cache(maxsize=None)
def _zeros_fn(shape, dtype, sharding):
    return jax.jit(lambda: jnp.zeros(shape, dtype), out_shardings=sharding)


def _zeros(shape, dtype, sharding) -> jax.Array:
    return _zeros_fn(tuple(shape), jnp.dtype(dtype), sharding)()


def _place(value: np.ndarray, sharding) -> jax.Array:
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _row_sharding(sharding):
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
    return sharding


WRITE_CHUNK_BYTES = 64 << 20


class _PartialWriter:
    """Collects placed variables and appends them to an Orbax checkpoint in partial saves."""

    def __init__(self, path: str, flush_bytes: int):
        from orbax.checkpoint import v1
        from orbax.checkpoint.experimental.v1 import partial

        self.partial, self.path, self.flush_bytes = partial, path, flush_bytes
        # Bounded chunks: Orbax compresses chunk by chunk, so its write buffers stay small too.
        self.context = v1.Context()
        self.context.array.saving.storage_options.chunk_byte_size = WRITE_CHUNK_BYTES
        self.pending: dict[tuple, jax.Array] = {}
        self.pending_bytes = 0

    def add(self, path: tuple, array: jax.Array) -> None:
        self.pending[path] = array
        self.pending_bytes += array.nbytes
        if self.pending_bytes >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        tree: dict = {}
        for path, array in self.pending.items():
            node = tree
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = array
        with self.context, interrupts_deferred():  # Orbax writes in its own threads
            self.partial.save(self.path, tree)
        self.pending, self.pending_bytes = {}, 0

    def finalize(self) -> None:
        self.flush()
        with self.context, interrupts_deferred():
            self.partial.finalize(self.path)


HOST_STACK_BYTES = 64 << 20


class _DeviceSink:
    """`weights.Sink` that places values onto their target shardings and hands finished variables on."""

    def __init__(self, targets: dict[str, tuple[tuple, jax.ShapeDtypeStruct]], writer: _PartialWriter):
        self.targets, self.writer = targets, writer
        self.stacks: dict[str, jax.Array | np.ndarray] = {}
        self.done: dict[str, jax.Array] = {}

    def begin(self, name):
        pass

    def put(self, name, row, value):
        _, target = self.targets[name]
        value = np.asarray(value).astype(target.dtype, copy=False)
        if row is None:
            self.done[name] = _place(value, target.sharding)
            return
        on_host = target.size * target.dtype.itemsize < HOST_STACK_BYTES
        if name not in self.stacks:
            self.stacks[name] = (np.zeros(target.shape, target.dtype) if on_host else
                                 _zeros(target.shape, target.dtype, target.sharding))
        if on_host:
            self.stacks[name][row] = value
            return
        placed = _place(value, _row_sharding(target.sharding))
        self.stacks[name] = _set_row(self.stacks[name], placed, jnp.int32(row)).block_until_ready()

    def end(self, name):
        array = self.done.pop(name, None)
        if array is None:
            array = self.stacks.pop(name)
            if isinstance(array, np.ndarray):
                array = _place(array, self.targets[name][1].sharding)
        self.writer.add(self.targets[name][0], array)


@dataclasses.dataclass
class ConversionReport(LoadReport):
    """A conversion's `LoadReport`, plus the source tensors holding NaN or Inf that `allow_nonfinite`
    let through, one "<file>: tensor <key>: <n> NaN, <m> Inf of <size>" line each."""

    nonfinite: list[str] = dataclasses.field(default_factory=list)


class _FiniteChecked:
    """`source` whose reads count the NaN and Inf values of each tensor as it is read (no extra pass
    over the file): the first non-finite tensor raises, or with `allow` is listed in `found`."""

    def __init__(self, source: TensorSource, allow: bool, found: list[str]):
        self.source, self.allow, self.found = source, allow, found

    def read(self, key: str) -> np.ndarray:
        value = self.source.read(key)
        nan, inf = nonfinite_counts(value)
        if nan or inf:
            file, name = locate(self.source, key)
            where = f"{file}: tensor {name}" if file else f"tensor {name}"
            if not self.allow:
                raise SourceError(f"{where} holds {nan} NaN and {inf} infinite values (of {value.size}); "
                                  "--allow-nonfinite converts it anyway")
            self.found.append(f"{where}: {nan} NaN, {inf} Inf of {value.size}")
        return value


def _initial_values(init, graphdef, abstract, wanted: set[str]) -> dict[str, jax.Array]:
    """The init values of only the `wanted` variables (LoRA kept at init, RNG state), computed by the
    model's own initialiser in one jit whose other outputs XLA drops."""
    def select(state):
        flat = ((path_str(p), v.get_value()) for p, v in nnx.to_flat_state(state))
        return {n: v for n, v in flat if n in wanted}

    shardings = {n: v.sharding for n, v in select(abstract).items()}
    return jax.jit(lambda: select(nnx.state(init())), out_shardings=shardings)()


def _variable_shapes(abstract) -> dict[str, tuple[int, ...]]:
    return {path_str(p): tuple(v.shape) for p, v in nnx.to_flat_state(abstract) if isinstance(v, (nnx.Param, Buffer))}


def plan_converted(init: Callable[[], nnx.Module], source: TensorSource, table: Sequence[Rule], *,
                   strict: bool = False, allow_missing: Callable[[str], bool] | None = None):
    """The conversion plan of `source` into the model `init()` builds, from names and shapes alone:
    nothing is read or allocated. Raises the one ValueError report of every problem (`plan_load`)."""
    _, abstract = nnx.split(nnx.eval_shape(init))
    return plan_load(source, _variable_shapes(abstract), table, strict=strict, allow_missing=allow_missing)


def write_converted(path: str, init: Callable[[], nnx.Module], source: TensorSource, table: Sequence[Rule], *,
                    mesh: Mesh | None = None, rules: Rules | None = None, strict: bool = False,
                    allow_missing: Callable[[str], bool] | None = None, flush_bytes: int = 128 << 20,
                    allow_nonfinite: bool = False, check: Callable[[], None] | None = None,
                    progress: Progress | None = None) -> ConversionReport:
    """Convert `source` through `table` into the Orbax checkpoint directory `path` (which must not exist)
    of the model `init()` builds; the plan (and its report of every problem) comes before any read.
    `check` runs after each unit of tensors; what it raises stops the conversion.

    Raises:
      ValueError: the plan's report of every problem (`plan_load`).
      SourceError: a source tensor holds NaN or Inf (naming its file and key, with the counts), unless
        `allow_nonfinite`, which lists it in the report's `nonfinite` instead.
    """
    progress = progress or Progress(quiet=True)
    graphdef, abstract = abstract_model(init, mesh, rules)
    flat = [(p, v) for p, v in nnx.to_flat_state(abstract)]
    targets = {path_str(p): (p, v.get_value()) for p, v in flat}
    shapes = _variable_shapes(abstract)
    plan = plan_load(source, shapes, table, strict=strict, allow_missing=allow_missing)
    writer = _PartialWriter(path, flush_bytes)
    sink = _DeviceSink(targets, writer)
    units = plan.units()
    done = 0
    nonfinite: list[str] = []
    with progress.stage(f"converting {len(plan.report.loaded)} tensors into {len(shapes)} variables"):
        def report(names):
            nonlocal done
            done += 1
            progress.step(done, len(units), "units")
            if check is not None:
                check()

        fill(plan, _FiniteChecked(source, allow_nonfinite, nonfinite), sink, on_unit=report)
        written = {s.name for slots in plan.writes.values() for s, _ in slots}
        rest = set(targets) - written
        if rest:
            for name, array in _initial_values(init, graphdef, abstract, rest).items():
                writer.add(targets[name][0], array)
        writer.finalize()
    return ConversionReport(**{f.name: getattr(plan.report, f.name) for f in dataclasses.fields(LoadReport)},
                            nonfinite=nonfinite)
