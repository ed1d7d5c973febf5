"""Device meshes, the ONE logical-to-mesh rules table, and sharded model creation.

Every parameter carries logical axis names in its `logical_axes` metadata (e.g. `("embed",
"heads")`); activations are constrained with `shard_activation(x, ("batch", "seq", "act_embed"))`.
`RULES` maps each logical name to mesh axes; configs override single entries
(`rules_with_overrides`). Meshes use Auto axis types (classic GSPMD propagation).
"""
from __future__ import annotations

import argparse
import contextlib
import contextvars
import logging
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from seedx_jax.nn.stack import LOGICAL_AXES

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")

MeshAxes = str | tuple[str, ...] | None
Rules = tuple[tuple[str, MeshAxes], ...]

# Logical axis -> mesh axes. Parameters: FSDP shards the model dimension, tensor parallelism the
# heads / MLP / vocabulary dimension (Megatron layout). Activations: batch over data x fsdp.
RULES: Rules = (
    # activations
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_seq", None),
    # parameters
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("lora_rank", None),
    ("norm", None),
)

_ACTIVE_RULES: contextvars.ContextVar[Rules] = contextvars.ContextVar("rules", default=RULES)


def rules_with_overrides(overrides: Mapping[str, MeshAxes] | Iterable[tuple[str, MeshAxes]] = ()) -> Rules:
    """`RULES` with some entries replaced (e.g. `{"embed": None}` to turn FSDP off for params)."""
    overrides = {name: tuple(axes) if isinstance(axes, list) else axes
                 for name, axes in dict(overrides).items()}
    known = {name for name, _ in RULES}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"sharding rule overrides name unknown logical axes {unknown}; "
                         f"known: {sorted(known)}")
    for name, axes in overrides.items():
        for axis in (axes,) if isinstance(axes, str) else (axes or ()):
            if axis not in MESH_AXES:
                raise ValueError(f"sharding rule {name!r} -> {axes!r}: {axis!r} is not a mesh "
                                 f"axis {MESH_AXES}")
    return tuple((name, overrides.get(name, axes)) for name, axes in RULES)


@contextlib.contextmanager
def use_rules(rules: Rules):
    """Rules used by `shard_activation` while tracing inside this context."""
    token = _ACTIVE_RULES.set(rules)
    try:
        yield
    finally:
        _ACTIVE_RULES.reset(token)


# --------------------------------------------------------------------------------------------
# Meshes

def resolve_axis_sizes(sizes: Mapping[str, int], total: int, *, what: str = "mesh") -> tuple[int, ...]:
    """Sizes of (data, fsdp, tensor) with at most one -1 (= the rest of `total` devices)."""
    shape = [int(sizes.get(axis, 1)) for axis in MESH_AXES]
    fills = [axis for axis, s in zip(MESH_AXES, shape) if s == -1]
    if len(fills) > 1:
        raise ValueError(f"{what}: only one axis may be -1, got {fills}")
    for axis, s in zip(MESH_AXES, shape):
        if s == 0 or s < -1:
            raise ValueError(f"{what}.{axis}={s}: sizes must be positive or -1")
    known = math.prod(s for s in shape if s != -1)
    if fills:
        if total % known:
            raise ValueError(f"{what}: {total} devices cannot be split with the fixed axes "
                             f"{dict(zip(MESH_AXES, shape))} (product {known})")
        shape[MESH_AXES.index(fills[0])] = total // known
    if math.prod(shape) != total:
        raise ValueError(f"{what}: axis sizes {dict(zip(MESH_AXES, shape))} multiply to "
                         f"{math.prod(shape)}, but there are {total} devices")
    return tuple(shape)


def hybrid_mesh_shapes(cfg: Mapping[str, int], num_devices: int, num_slices: int
                       ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(per-slice ICI shape, across-slice DCN shape) for (data, fsdp, tensor).

    `cfg` holds `data/fsdp/tensor` for the devices of one slice and `dcn_data/dcn_fsdp/dcn_tensor`
    for the slices (default: all slices on `data`, the axis with the least communication).
    """
    if num_devices % num_slices:
        raise ValueError(f"{num_devices} devices do not split into {num_slices} equal slices")
    dcn = {axis: cfg.get(f"dcn_{axis}", 1) for axis in MESH_AXES}
    if num_slices > 1 and all(v == 1 for v in dcn.values()):
        dcn["data"] = -1
    dcn_shape = resolve_axis_sizes(dcn, num_slices, what="mesh (dcn_*)")
    ici_shape = resolve_axis_sizes(cfg, num_devices // num_slices, what="mesh")
    return ici_shape, dcn_shape


def make_mesh(cfg: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axis types from a mesh config (see `hybrid_mesh_shapes`)."""
    devices = list(jax.devices() if devices is None else devices)
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    ici_shape, dcn_shape = hybrid_mesh_shapes(cfg, len(devices), num_slices)
    if num_slices > 1:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_hybrid_device_mesh(ici_shape, dcn_shape, devices)
    else:
        grid = np.asarray(devices).reshape(ici_shape)
    return Mesh(grid, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES))


# --------------------------------------------------------------------------------------------
# Logical axes -> PartitionSpec / NamedSharding

def mesh_argument(text: str) -> dict[str, int]:
    """A command line's `--mesh fsdp=4,tensor=2` -> {"fsdp": 4, "tensor": 2} (argparse `type=`)."""
    try:
        return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mesh {text!r}: expected axis=size pairs, e.g. fsdp=4,tensor=2") from None


def _mesh_axes(name: str | None, rules: Rules) -> tuple[str, ...]:
    if name is None:
        return ()
    for rule_name, axes in rules:
        if rule_name == name:
            return () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    raise ValueError(f"logical axis {name!r} has no entry in the sharding rules table")


def logical_to_spec(logical_axes: Sequence[str | None], rules: Rules | None = None, *,
                    mesh: Mesh | None = None, shape: Sequence[int] | None = None,
                    name: str = "array") -> P:
    """PartitionSpec for logical axis names.

    With `mesh` and `shape`, a dimension that the mapped mesh axes do not divide is replicated
    (logged) instead of failing in XLA; a mesh axis already used by an earlier dimension is skipped.
    """
    rules = _ACTIVE_RULES.get() if rules is None else rules
    used: set[str] = set()
    spec = []
    for dim, logical in enumerate(logical_axes):
        axes = tuple(a for a in _mesh_axes(logical, rules) if a not in used)
        if mesh is not None:
            axes = tuple(a for a in axes if mesh.shape[a] > 1)
            if shape is not None and axes:
                size = math.prod(mesh.shape[a] for a in axes)
                if shape[dim] % size:
                    log.warning("%s: dim %d (%s, size %d) is not divisible by mesh axes %s (size %d); "
                                "replicating it", name, dim, logical, shape[dim], axes, size)
                    axes = ()
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return P(*spec)


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def state_shardings(state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """A tree of NamedSharding matching `state` (an nnx.State of Variables, abstract or concrete)."""
    rules = _ACTIVE_RULES.get() if rules is None else rules

    def one(path, var):
        axes = var.get_metadata().get(LOGICAL_AXES)
        name = "/".join(str(getattr(k, "key", k)) for k in path)
        if axes is None:
            if var.ndim:
                raise ValueError(f"parameter {name} {var.shape} was created without logical_axes")
            axes = ()
        if len(axes) != var.ndim:
            raise ValueError(f"parameter {name}: logical_axes {axes} do not match its shape {var.shape}")
        spec = logical_to_spec(axes, rules, mesh=mesh, shape=var.shape, name=name)
        return var.replace(NamedSharding(mesh, spec))

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=_is_variable)


def abstract_model(init_fn: Callable[[], nnx.Module], mesh: Mesh | None, rules: Rules | None = None):
    """(graphdef, abstract state): ShapeDtypeStructs carrying their target NamedSharding, or, without a
    mesh, device 0 (whatever mesh context is active: an abstract mesh cannot place a restore).

    No parameter memory is allocated; use it for AOT compiles and Orbax restores.
    """
    graphdef, abstract_state = nnx.split(nnx.eval_shape(init_fn))
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return graphdef, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_state)
    return graphdef, with_shardings(abstract_state, state_shardings(abstract_state, mesh, rules))


def with_shardings(abstract: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `abstract`'s leaves carrying the matching `shardings` (AOT inputs, restore targets)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def create_sharded(init_fn: Callable[[], nnx.Module], mesh: Mesh, rules: Rules | None = None) -> nnx.Module:
    """Build `init_fn()` with every parameter created directly in its sharded layout.

    The initialiser runs inside one jit whose out_shardings come from the rules table, so no host
    or single-device copy of the full model ever exists.
    """
    graphdef, abstract_state = nnx.split(nnx.eval_shape(init_fn))
    shardings = state_shardings(abstract_state, mesh, rules)

    def init():
        return nnx.state(init_fn())

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    return nnx.merge(graphdef, state)


def shard_state(state: Any, mesh: Mesh, rules: Rules | None = None) -> Any:
    """Move an existing state onto the mesh following the rules table."""
    return jax.device_put(state, state_shardings(state, mesh, rules))


def shard_activation(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op outside `jax.set_mesh(...)`."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(
        x, logical_to_spec(logical_axes, mesh=mesh, shape=x.shape, name="activation"))


def logical_axis_size(name: str, mesh: Mesh, rules: Rules | None = None) -> int:
    """How many shards the mesh cuts a dimension with logical axis `name` into."""
    axes = _mesh_axes(name, _ACTIVE_RULES.get() if rules is None else rules)
    return math.prod(mesh.shape[a] for a in axes)


def check_batch_divisible(batch_size: int, mesh: Mesh | None = None, rules: Rules | None = None,
                          *, field: str = "batch_size") -> None:
    """Fail early, naming `field`, if the mesh axes that shard the batch do not divide it.

    `mesh` defaults to the one set with `jax.set_mesh` (no check without one).
    """
    mesh = jax.sharding.get_abstract_mesh() if mesh is None else mesh
    if mesh.empty:
        return
    axes = _mesh_axes("batch", _ACTIVE_RULES.get() if rules is None else rules)
    size = logical_axis_size("batch", mesh, rules)
    if batch_size % size:
        raise ValueError(f"{field}={batch_size} is not divisible by the batch mesh axes "
                         f"{dict((a, mesh.shape[a]) for a in axes)} (product {size})")
