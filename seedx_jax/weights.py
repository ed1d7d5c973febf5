"""Apply a PyTorch-key mapping table to an nnx model, with one coverage report.

A table is a sequence of `Rule(pattern, target, transform)`: `pattern` is a full-match regex on the
source key, `target` a dotted parameter path using `\\1`-style group references (None: a key to
ignore on purpose, e.g. rotary `inv_freq` buffers), or a tuple of paths when one source tensor
feeds several parameters (packed q/k/v): then `transform` returns one array per path. When the
model stacks layers, `layers.3.mlp.up_proj.kernel` lands in row 3 of `layers.mlp.up_proj.kernel`
(also inside lists: `down_blocks.1.attentions.0.transformer_blocks.3...` -> row 3).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable, Iterable, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx

from seedx_jax.nn.buffer import Buffer


def transpose(x: np.ndarray) -> np.ndarray:
    """torch Linear weight `[out, in]` -> kernel `[in, out]`."""
    return x.T


def conv_kernel(w: np.ndarray) -> np.ndarray:
    """torch Conv2d weight `[out, in, kh, kw]` -> HWIO."""
    return w.transpose(2, 3, 1, 0)


@dataclasses.dataclass(frozen=True)
class Rule:
    pattern: str
    target: str | tuple[str, ...] | None
    transform: Callable[[np.ndarray], np.ndarray | tuple[np.ndarray, ...]] | None = None


def norm_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """A torch LayerNorm / GroupNorm at regex `src` -> our norm at `dst` (weight -> scale)."""
    return (Rule(src + r"\.weight", dst + ".scale"), Rule(src + r"\.bias", dst + ".bias"))


def dense_rules(src: str, dst: str) -> tuple[Rule, ...]:
    """A biased torch Linear at regex `src` -> our Linear at `dst`."""
    return (Rule(src + r"\.weight", dst + ".kernel", transpose), Rule(src + r"\.bias", dst + ".bias"))


@dataclasses.dataclass
class LoadReport:
    loaded: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)  # matched an ignore rule
    unmatched: list[str] = dataclasses.field(default_factory=list)  # no rule / no such parameter
    mismatched: list[str] = dataclasses.field(default_factory=list)  # shape differs
    missing: list[str] = dataclasses.field(default_factory=list)  # parameters nobody wrote

    def problems(self, strict: bool) -> list[str]:
        out = [f"shape mismatch: {m}" for m in self.mismatched]
        out += [f"missing parameter: {m}" for m in self.missing]
        if strict:
            out += [f"unmatched source key: {k}" for k in self.unmatched]
        return out

    def summary(self) -> str:
        return (f"{len(self.loaded)} loaded, {len(self.ignored)} ignored, {len(self.unmatched)} "
                f"unmatched, {len(self.mismatched)} mismatched, {len(self.missing)} missing")


def _path_str(path) -> str:
    return ".".join(str(k) for k in path)


def load_weights(model: nnx.Module, tensors: Iterable[tuple[str, np.ndarray]], table: Sequence[Rule], *,
                 strip_prefixes: Sequence[str] = (), strict: bool = False,
                 allow_missing: Callable[[str, nnx.Variable], bool] | None = None) -> LoadReport:
    """Write source tensors into `model` in place; raise one ValueError listing every problem.

    Default: fail on shape mismatches and missing parameters (except those `allow_missing`
    accepts); `strict` also fails on source keys that no rule maps.
    """
    variables = {_path_str(p): v for p, v in nnx.to_flat_state(nnx.state(model, (nnx.Param, Buffer)))}
    compiled = [(re.compile(r.pattern), r) for r in table]
    buffers: dict[str, np.ndarray] = {}
    written: dict[str, set[int] | None] = {}
    report = LoadReport()

    def write(key: str, path: str, value: np.ndarray) -> bool:
        if path in variables:
            name, row = path, None
        else:  # stacked layers: drop the layer index (the one digit whose removal names a variable)
            parts = path.split(".")
            name, row = next(((n, int(parts[i])) for i, p in enumerate(parts) if p.isdigit()
                              if (n := ".".join(parts[:i] + parts[i + 1:])) in variables), (None, None))
            if name is None:
                report.unmatched.append(f"{key} -> {path}")
                return False
        var = variables[name]
        if row is not None and row >= var.shape[0]:
            report.unmatched.append(f"{key} -> {path} (layer {row} >= {var.shape[0]})")
            return False
        want = var.shape if row is None else var.shape[1:]
        if tuple(value.shape) != tuple(want):
            report.mismatched.append(f"{key} {tuple(value.shape)} -> {path} {tuple(want)}")
            return False
        if row is None:
            var[...] = jnp.asarray(value, var.dtype)
            written[name] = None
        else:
            buffers.setdefault(name, np.array(var[...]))[row] = value
            rows = written.setdefault(name, set())
            if rows is not None:
                rows.add(row)
        return True

    for key, value in tensors:
        src = key
        for prefix in strip_prefixes:
            if src.startswith(prefix):
                src = src[len(prefix):]
        rule, match = next(((r, m) for c, r in compiled if (m := c.fullmatch(src))), (None, None))
        if rule is None:
            report.unmatched.append(key)
            continue
        if rule.target is None:
            report.ignored.append(key)
            continue
        value = np.asarray(value)
        if rule.transform is not None:
            value = rule.transform(value)
        if isinstance(rule.target, tuple):
            results = [write(key, match.expand(t), np.asarray(v)) for t, v in zip(rule.target, value)]
        else:
            results = [write(key, match.expand(rule.target), np.asarray(value))]
        if all(results):
            report.loaded.append(key)

    for name, buf in buffers.items():
        variables[name][...] = jnp.asarray(buf, variables[name].dtype)
    for name, var in variables.items():
        if name in written and (written[name] is None or len(written[name]) == var.shape[0]):
            continue
        if allow_missing is not None and allow_missing(name, var):
            continue
        rows = written.get(name)
        report.missing.append(name if not rows else
                              f"{name} (layers {sorted(set(range(var.shape[0])) - rows)})")

    problems = report.problems(strict)
    if problems:
        raise ValueError(f"weight loading failed ({report.summary()}):\n  " + "\n  ".join(problems))
    return report
