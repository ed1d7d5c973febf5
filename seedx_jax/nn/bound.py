"""A module split once, for plain `jax.jit` functions on hot paths.

`nnx.jit` walks a module's object graph on every call and `nnx.split` rebuilds its state (tens of
ms for a U-Net on CPU), and a `GraphDef` as a static jit argument is hashed on every call (ms).
`bind(module)` splits once: the graph definition and state layout go into a `GraphSpec` (hashed by
identity, so it is a cheap static argument; modules of one structure share one spec, and so the
compiled programs: a second pipeline or a reloaded checkpoint compiles nothing), and since the split state holds the module's own
Variables, a call only reads their current arrays (`values()`, about 1 us a variable).

In-place updates (weight loads, optimizer steps, `nnx.update`) are seen by the next call. Putting a
new Variable or sub-module object into the module is not: call `bind(module, refresh=True)` after
such surgery (`nnx.merge` makes a new module object, which gets its own binding).
"""
from __future__ import annotations

import weakref

import jax
from flax import nnx


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


class GraphSpec:
    """What a traced function needs to rebuild a module from its values: a static jit argument.

    Equal only to itself (the default identity hash and equality), so jit's cache lookup costs nothing;
    `BoundModule` hands out one per module structure.
    """

    __slots__ = ("graphdef", "treedef", "__weakref__")

    def __init__(self, graphdef, treedef):
        self.graphdef, self.treedef = graphdef, treedef

    def merge(self, values: list[jax.Array]) -> nnx.Module:
        """The module holding `values` (arrays or tracers, in `BoundModule.values()` order)."""
        return nnx.merge(self.graphdef, jax.tree.unflatten(self.treedef, values))


_SPECS: dict = {}  # (graphdef, treedef) -> its one GraphSpec


class BoundModule:
    def __init__(self, module: nnx.Module):
        graphdef, state = nnx.split(module)
        self._variables = jax.tree.leaves(state, is_leaf=_is_variable)
        treedef = jax.tree.structure(state)
        if treedef.num_leaves != len(self._variables):  # every Variable must hold one array
            raise ValueError(f"bind: {type(module).__name__} has Variables that do not hold one array each")
        self.spec = _SPECS.setdefault((graphdef, treedef), GraphSpec(graphdef, treedef))

    def values(self) -> list[jax.Array]:
        """The module's current arrays, a flat list (a jit argument that flattens at C++ speed)."""
        return [v.get_raw_value() for v in self._variables]


_BOUND: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def bind(module: nnx.Module, *, refresh: bool = False) -> BoundModule:
    """The `BoundModule` of `module`, split on first use (or again with `refresh`) and then kept."""
    bound = None if refresh else _BOUND.get(module)
    if bound is None:
        bound = _BOUND[module] = BoundModule(module)
    return bound
