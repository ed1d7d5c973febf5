"""Mapping tables between PyTorch state-dict keys and nnx variables, read in both directions.

A table is a sequence of `Rule(source, target, transform)`; `source` and `target` are key templates:

* `{name}` matches one dotted component, `{i}` a layer index (digits), `{name:regex}` any regex
  (a target reuses the source's regex for the same name);
* `[text]` in a source is optional when importing and left out when exporting (aliases such as
  peft's `.base_layer` or `base_model.model.` prefix);
* `target=None` ignores a key on purpose (rotary `inv_freq` buffers, peft's unused copies);
* a tuple of targets takes one source tensor apart (packed q/k/v): `transform.forward` returns one
  array per target and `transform.inverse` packs them again for export.

Stacked layers: `layers.3.mlp.up_proj.kernel` is row 3 of the variable `layers.mlp.up_proj.kernel`
(also inside lists: `down_blocks.1.attentions.0.transformer_blocks.3...` -> row 3).

Importing is planned from key names and shapes alone (`plan_load`), so every unmatched key, missing
variable and shape mismatch is reported at once, before any tensor is read; `fill` then reads the
tensors unit by unit (a unit: the source keys that write the same variables, e.g. all 40 rows of a
stacked kernel) into a `Sink`.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, Iterable, Iterator, Mapping, Protocol, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.nn.buffer import Buffer
from seedx_jax.sources import ArraySource, TensorSource

# --------------------------------------------------------------------------------------------------
# Layout transforms (each with its inverse, for export)


@dataclasses.dataclass(frozen=True)
class Transform:
    forward: Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, ...]]
    inverse: Callable[..., np.ndarray]


TRANSPOSE = Transform(lambda x: x.T, lambda x: x.T)  # torch Linear `[out, in]` <-> kernel `[in, out]`
CONV_KERNEL = Transform(lambda w: w.transpose(2, 3, 1, 0),  # torch Conv2d `[out, in, kh, kw]` <-> HWIO
                        lambda k: k.transpose(3, 2, 0, 1))
# torch MHA `in_proj` `[3E, ...]` = [q; k; v] <-> three kernels (transposed) or biases.
SPLIT_QKV = Transform(lambda packed: tuple(part.T for part in np.split(packed, 3, axis=0)),
                      lambda q, k, v: np.concatenate([q.T, k.T, v.T], axis=0))


def split_qkv_interleaved(heads: int) -> Transform:
    """Qwen `VisualAttention.in_proj`: rows grouped per head as [q_h; k_h; v_h] (qwen_visual.py)."""

    def forward(packed):
        width = packed.shape[0] // 3
        grouped = packed.reshape(heads, 3, width // heads, *packed.shape[1:])
        return tuple(grouped[:, i].reshape(width, *packed.shape[1:]).T for i in range(3))

    def inverse(*parts):
        width = parts[0].shape[-1]
        rows = [p.T.reshape(heads, 1, width // heads, *p.T.shape[1:]) for p in parts]
        return np.concatenate(rows, axis=1).reshape(3 * width, *parts[0].T.shape[1:])

    return Transform(forward, inverse)


# --------------------------------------------------------------------------------------------------
# Key templates and rules

_TOKEN = re.compile(r"\{(\w+)(?::([^{}]*))?\}|\[([^\[\]{}]*)\]")


class Template:
    """A key template (see the module docstring) compiled to a regex, and formattable back."""

    def __init__(self, text: str, regexes: Mapping[str, str] | None = None):
        self.text, self.regexes = text, dict(regexes or {})
        self.parts: list[tuple[str, str]] = []  # ("lit" | "opt" | "name", text)
        pattern, pos = [], 0
        for m in _TOKEN.finditer(text):
            self.parts.append(("lit", text[pos:m.start()]))
            pattern.append(re.escape(text[pos:m.start()]))
            name, regex, optional = m.groups()
            if name is None:
                self.parts.append(("opt", optional))
                pattern.append(f"(?:{re.escape(optional)})?")
            else:
                if name in self.names:
                    pattern.append(f"(?P={name})")
                else:
                    if regex is not None:
                        self.regexes[name] = regex
                    default = r"\d+" if name == "i" else r"[^.]+"
                    pattern.append(f"(?P<{name}>{self.regexes.setdefault(name, default)})")
                self.parts.append(("name", name))
            pos = m.end()
        self.parts.append(("lit", text[pos:]))
        pattern.append(re.escape(text[pos:]))
        self.regex = re.compile("".join(pattern))

    @property
    def names(self) -> set[str]:
        return {t for kind, t in self.parts if kind == "name"}

    def match(self, key: str) -> dict[str, str] | None:
        m = self.regex.fullmatch(key)
        return None if m is None else m.groupdict()

    def format(self, values: Mapping[str, str]) -> str:
        return "".join(values[t] if kind == "name" else t if kind == "lit" else "" for kind, t in self.parts)


@dataclasses.dataclass(frozen=True)
class Rule:
    source: str
    target: str | tuple[str, ...] | None
    transform: Transform | None = None

    def __post_init__(self):
        source = Template(self.source)
        targets = (() if self.target is None else (self.target,) if isinstance(self.target, str) else self.target)
        compiled = tuple(Template(t, source.regexes) for t in targets)
        for t in compiled:
            if t.names - source.names:
                raise ValueError(f"Rule target {t.text!r} uses names {sorted(t.names - source.names)} "
                                 f"that its source {self.source!r} does not bind")
        object.__setattr__(self, "compiled_source", source)
        object.__setattr__(self, "compiled_targets", compiled)

    def forward(self, value: np.ndarray) -> tuple[np.ndarray, ...]:
        out = value if self.transform is None else self.transform.forward(value)
        return out if isinstance(self.target, tuple) else (out,)

    def inverse(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        return parts[0] if self.transform is None else self.transform.inverse(*parts)

    def prefixed(self, source_prefix: str, target_prefix: str) -> "Rule":
        target = self.target
        if isinstance(target, str):
            target = target_prefix + target
        elif target is not None:
            target = tuple(target_prefix + t for t in target)
        return Rule(source_prefix + self.source, target, self.transform)


def prefixed(rules: Sequence[Rule], source_prefix: str, target_prefix: str) -> tuple[Rule, ...]:
    """A sub-model's table inside a bigger model: `resampler.` keys -> `resampler.` variables, ..."""
    return tuple(r.prefixed(source_prefix, target_prefix) for r in rules)


def norm_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """A torch LayerNorm / GroupNorm at template `src` -> our norm at `dst` (weight -> scale)."""
    return (Rule(src + ".weight", dst + ".scale"), Rule(src + ".bias", dst + ".bias"))


def dense_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """A biased torch Linear at template `src` -> our Linear at `dst`."""
    return (Rule(src + ".weight", dst + ".kernel", TRANSPOSE), Rule(src + ".bias", dst + ".bias"))


# --------------------------------------------------------------------------------------------------
# Planning an import


@dataclasses.dataclass
class LoadReport:
    loaded: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)  # matched an ignore rule
    overridden: list[str] = dataclasses.field(default_factory=list)  # a later key wrote the same variable
    unmatched: list[str] = dataclasses.field(default_factory=list)  # no rule / no such variable
    mismatched: list[str] = dataclasses.field(default_factory=list)  # shape differs
    missing: list[str] = dataclasses.field(default_factory=list)  # variables nobody wrote

    def problems(self, strict: bool) -> list[str]:
        out = [f"shape mismatch: {m}" for m in self.mismatched]
        out += [f"missing parameter: {m}" for m in self.missing]
        if strict:
            out += [f"unmatched source key: {k}" for k in self.unmatched]
        return out

    def error(self, strict: bool) -> str:
        """The failure message: every problem, then the unmatched keys a non-strict load would skip."""
        lines = [f"weight loading failed ({self.summary()}):"] + [f"  {p}" for p in self.problems(strict)]
        if not strict:
            lines += [f"  unmatched source key (skipped; fatal with strict): {k}" for k in self.unmatched]
        return "\n".join(lines)

    def summary(self) -> str:
        return ", ".join(f"{len(getattr(self, f.name))} {f.name}" for f in dataclasses.fields(self))

    def text(self) -> str:
        """Every non-loaded key, one per line (what `convert --report` prints)."""
        lines = [self.summary()]
        for f in dataclasses.fields(self):
            if f.name != "loaded":
                lines += [f"  {f.name}: {k}" for k in getattr(self, f.name)]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class Slot:
    name: str  # variable path
    row: int | None  # layer row of a stacked variable


@dataclasses.dataclass
class Plan:
    rules: dict[str, Rule]  # source key -> its rule
    writes: dict[str, list[tuple[Slot, int]]]  # source key -> (slot, index into rule.forward's outputs)
    report: LoadReport

    def units(self) -> list[tuple[list[str], list[str]]]:
        """(source keys, variable names) groups that complete variables together, in source order."""
        parent: dict[str, str] = {}

        def root(x):
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        for key, slots in self.writes.items():
            for slot, _ in slots:
                parent[root("v:" + slot.name)] = root("k:" + key)
        groups: dict[str, tuple[list[str], list[str]]] = {}
        for key in self.writes:
            groups.setdefault(root("k:" + key), ([], []))[0].append(key)
        for name in dict.fromkeys(s.name for slots in self.writes.values() for s, _ in slots):
            groups[root("v:" + name)][1].append(name)
        return list(groups.values())


def variable_shapes(state: nnx.State) -> dict[str, tuple[int, ...]]:
    """Dotted path -> shape of every variable (Param, LoRAParam, Buffer) in a live or abstract state."""
    return {path_str(p): tuple(v.shape) for p, v in nnx.to_flat_state(state)}


def path_str(path) -> str:
    """`('layers', 'mlp', 'up_proj', 'kernel')` -> `layers.mlp.up_proj.kernel`."""
    return ".".join(str(k) for k in path)


def _resolve(path: str, shapes: Mapping[str, tuple[int, ...]]) -> Slot | None:
    if path in shapes:
        return Slot(path, None)
    parts = path.split(".")  # stacked: drop the layer index (the one digit whose removal names a variable)
    for i, p in enumerate(parts):
        if p.isdigit() and (name := ".".join(parts[:i] + parts[i + 1:])) in shapes:
            return Slot(name, int(p))
    return None


def _output_shapes(rule: Rule, shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The transform's output shapes, computed on a zero-stride stand-in (no data read or allocated)."""
    return [o.shape for o in rule.forward(np.broadcast_to(np.zeros((), np.float32), shape))]


def plan_load(source: TensorSource, shapes: Mapping[str, tuple[int, ...]], table: Sequence[Rule], *,
              strict: bool = False, allow_missing: Callable[[str], bool] | None = None) -> Plan:
    """Map every source key to its variable slots from names and shapes alone; raise ONE ValueError
    listing every problem (shape mismatches, missing variables except those `allow_missing`
    accepts, and with `strict` unmatched keys). A key overridden by a later one is not checked."""
    report = LoadReport()
    rules, writes, owner, mismatched = {}, {}, {}, set()
    for key in reversed(source.keys()):  # later keys win, so claim slots from the back
        rule, values = next(((r, v) for r in table if (v := r.compiled_source.match(key)) is not None), (None, None))
        if rule is None:
            report.unmatched.append(key)
            continue
        if rule.target is None:
            report.ignored.append(key)
            continue
        paths = [t.format(values) for t in rule.compiled_targets]
        slots = [_resolve(p, shapes) for p in paths]
        if any(s is None for s in slots):
            report.unmatched.append(f"{key} -> {paths[slots.index(None)]}")
            continue
        if any(s in owner for s in slots):
            report.overridden.append(f"{key} (by {owner[next(s for s in slots if s in owner)]})")
            continue
        bad = [f"{key} -> {p} (layer {s.row} >= {shapes[s.name][0]})" for p, s in zip(paths, slots)
               if s.row is not None and s.row >= shapes[s.name][0]]
        if bad:
            report.unmatched.extend(bad)
            continue
        got = _output_shapes(rule, source.shape(key))
        want = [shapes[s.name][1:] if s.row is not None else shapes[s.name] for s in slots]
        if got != [tuple(w) for w in want]:
            shown = got[0] if len(got) == 1 else got
            report.mismatched.append(f"{key} {tuple(source.shape(key))} -> {paths[0]} "
                                     f"{tuple(want[0]) if len(want) == 1 else want} (got {shown})")
            mismatched.update(s.name for s in slots)
            continue
        rules[key] = rule
        writes[key] = [(s, part) for part, s in enumerate(slots)]
        for s in slots:
            owner[s] = key
    written: dict[str, set] = {}
    for s in owner:
        written.setdefault(s.name, set()).add(s.row)
    for name, shape in shapes.items():
        rows = written.get(name, set())
        if rows == {None} or (shape and rows == set(range(shape[0]))):
            continue
        if name in mismatched or (allow_missing is not None and allow_missing(name)):
            continue  # a mismatch is reported once, as the mismatch
        report.missing.append(name if not rows else f"{name} (layers {sorted(set(range(shape[0])) - rows)})")
    order = {k: i for i, k in enumerate(source.keys())}
    for field in dataclasses.fields(report):
        getattr(report, field.name).sort(key=lambda k: order.get(k.split(" ")[0], -1))
    report.loaded = [k for k in source.keys() if k in writes]
    if report.problems(strict):
        raise ValueError(report.error(strict))
    writes = {k: writes[k] for k in report.loaded}
    return Plan(rules, writes, report)


class Sink(Protocol):
    """Receives a unit's tensors: `begin` each variable, `put` whole values or rows, `end` it."""

    def begin(self, name: str) -> None: ...

    def put(self, name: str, row: int | None, value: np.ndarray) -> None: ...

    def end(self, name: str) -> None: ...


def fill(plan: Plan, source: TensorSource, sink: Sink, *, on_unit: Callable[[list[str]], None] | None = None) -> None:
    """Read each planned tensor once, transform it and hand its pieces to `sink`, unit by unit."""
    for keys, names in plan.units():
        for name in names:
            sink.begin(name)
        for key in keys:
            outs = plan.rules[key].forward(source.read(key))
            for slot, part in plan.writes[key]:
                sink.put(slot.name, slot.row, outs[part])
            del outs
        for name in names:
            sink.end(name)
        if on_unit is not None:
            on_unit(names)


class _ModelSink:
    """Writes into a live model's variables (stacked ones gathered in a host buffer first)."""

    def __init__(self, model: nnx.Module):
        self.variables = {path_str(p): v for p, v in nnx.to_flat_state(nnx.state(model, (nnx.Param, Buffer)))}
        self.buffers: dict[str, np.ndarray] = {}

    def begin(self, name):
        pass

    def put(self, name, row, value):
        var = self.variables[name]
        if row is None:
            var[...] = jnp.asarray(value, var.dtype)
        else:
            self.buffers.setdefault(name, np.array(var[...]))[row] = value

    def end(self, name):
        if name in self.buffers:
            var = self.variables[name]
            var[...] = jnp.asarray(self.buffers.pop(name), var.dtype)


def tensor_source(tensors, name: str = "tensors") -> TensorSource:
    """A TensorSource as given, or in-memory tensors: a mapping or (a list / generator of) `(key, array)`
    pairs, keys str, arrays anything with a `shape` (numpy, jax, torch).

    Raises:
      ValueError: naming `name`, for anything else (a file path: `seedx_jax.sources.open_tensors`
        reads files).
    """
    if hasattr(tensors, "read"):
        return tensors
    if isinstance(tensors, (str, bytes, os.PathLike)):
        raise ValueError(f"{name} is a {type(tensors).__name__}; open a file with seedx_jax.sources.open_tensors")
    if not isinstance(tensors, (Mapping, Iterable)):
        raise ValueError(f"{name} must be a mapping or (key, array) pairs, got {type(tensors).__name__}")
    pairs = {}
    for item in tensors.items() if isinstance(tensors, Mapping) else tensors:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)
                and hasattr(item[1], "shape")):
            raise ValueError(f"{name} must be a mapping or (key, array) pairs, got an item {_describe(item)}")
        pairs[item[0]] = item[1]
    return ArraySource(pairs)


def _describe(item) -> str:
    if isinstance(item, (tuple, list)):
        return "(" + ", ".join(type(x).__name__ for x in item) + ")"
    return type(item).__name__


def load_weights(model: nnx.Module, tensors, table: Sequence[Rule], *, strict: bool = False,
                 allow_missing: Callable[[str], bool] | None = None) -> LoadReport:
    """Write source tensors (`tensor_source`: a TensorSource, a mapping or `(key, array)` pairs) into
    `model` in place.

    Default: fail on shape mismatches and missing variables (except those `allow_missing` accepts);
    `strict` also fails on source keys that no rule maps.

    Raises:
      ValueError: `tensors` of another form (before any variable is written), or the load report's problems.
    """
    source = tensor_source(tensors)
    shapes = variable_shapes(nnx.state(model, (nnx.Param, Buffer)))
    plan = plan_load(source, shapes, table, strict=strict, allow_missing=allow_missing)
    fill(plan, source, _ModelSink(model))
    return plan.report


# --------------------------------------------------------------------------------------------------
# Export: variables -> source keys


def stack_points(shapes: Mapping[str, tuple[int, ...]], stacked: set[str]) -> dict[str, str]:
    """Stacked variable -> the module path its layer index follows (the highest ancestor all of whose
    variables are stacked), e.g. `layers.mlp.up_proj.kernel` -> `layers`."""
    out = {}
    for name in stacked:
        parts = name.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            if all(n in stacked for n in shapes if n.startswith(prefix + ".")):
                out[name] = prefix
                break
    return out


def export_plan(shapes: Mapping[str, tuple[int, ...]], stacked: set[str], table: Sequence[Rule], *,
                skip: Callable[[str], bool] | None = None) -> dict[str, tuple[Rule, list[Slot]]]:
    """Source key -> (rule, the slots its parts come from), for every variable a rule can write.

    Raises ValueError naming the variables no rule exports (unless `skip` accepts them)."""
    points = stack_points(shapes, stacked)
    parts: dict[str, tuple[Rule, dict[int, Slot]]] = {}
    unexported = []
    for name, shape in shapes.items():
        if skip is not None and skip(name):
            continue
        if name in points:
            point = points[name]
            rest = name[len(point):]
            indexed = [(f"{point}.{row}{rest}", Slot(name, row)) for row in range(shape[0])]
        else:
            indexed = [(name, Slot(name, None))]
        for path, slot in indexed:
            found = next(((r, i, v) for r in table for i, t in enumerate(r.compiled_targets)
                          if (v := t.match(path)) is not None), None)
            if found is None:
                unexported.append(path)
                continue
            rule, part, values = found
            key = rule.compiled_source.format(values)
            parts.setdefault(key, (rule, {}))[1][part] = slot
    if unexported:
        raise ValueError(f"no rule exports {len(unexported)} variables, e.g. {unexported[:3]}")
    incomplete = [k for k, (r, got) in parts.items() if len(got) != len(r.compiled_targets)]
    if incomplete:
        raise ValueError(f"export of {incomplete[:3]} lacks some of their packed parts")
    return {k: (r, [got[i] for i in range(len(got))]) for k, (r, got) in parts.items()}


def export_tensors(plan: Mapping[str, tuple[Rule, list[Slot]]], read: Callable[[Slot], np.ndarray]
                   ) -> Iterator[tuple[str, np.ndarray]]:
    """`(source key, tensor)` one at a time, each from the slots `read` returns."""
    for key, (rule, slots) in plan.items():
        yield key, np.ascontiguousarray(rule.inverse([read(s) for s in slots]))
