"""What every frozen model-config dataclass shares: presets, `replace`, field checks."""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar, Mapping

from seedx_jax.nn.attention import attention_impls
from seedx_jax.nn.stack import remat_policy


class ConfigBase:
    """Mixin for frozen dataclasses; a subclass's `PRESETS` maps names to instances."""

    PRESETS: ClassVar[dict[str, Any]] = {}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides):
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.__name__} preset {name!r}; choose from {sorted(cls.PRESETS)}")
        return dataclasses.replace(cls.PRESETS[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (nested configs as dicts, tuples as lists); `from_dict` inverts it."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Fields from a mapping (e.g. `ConfigDict.to_dict()`), on top of `preset` when it names one;
        nested config fields from mappings; lists back to tuples."""
        d = dict(d)
        preset = d.pop("preset", None)
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {unknown}")
        fields = {}
        for name, value in d.items():
            nested = _dataclass_in(hints[name])
            if nested is not None and isinstance(value, Mapping):
                value = nested.from_dict(value) if hasattr(nested, "from_dict") else nested(**_tuples(value))
            fields[name] = _tuples(value)
        return cls.preset(preset, **fields) if preset else cls(**fields)

    @classmethod
    def from_overrides(cls, d: Mapping[str, Any]):
        """`preset` (or the defaults) with the fields of `d` replaced; nested mappings override the
        preset's nested config field by field (`from_dict` builds nested configs from scratch)."""
        d = dict(d)
        preset = d.pop("preset", None)
        return (cls.preset(preset) if preset else cls()).override(d)

    def override(self, d: Mapping[str, Any]):
        hints = typing.get_type_hints(type(self))
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"{type(self).__name__} has no fields {unknown}")
        fields = {}
        for name, value in d.items():
            nested, current = _dataclass_in(hints[name]), getattr(self, name)
            if nested is not None and isinstance(value, Mapping):
                if current is not None and hasattr(current, "override"):
                    value = current.override(value)
                else:
                    value = nested.from_dict(value) if hasattr(nested, "from_dict") else nested(**_tuples(value))
            fields[name] = _tuples(value)
        return dataclasses.replace(self, **fields)

    def check_divisible(self, field: str, by: str) -> None:
        value, divisor = getattr(self, field), getattr(self, by)
        if value % divisor:
            raise ValueError(f"{type(self).__name__}.{field}={value} is not divisible by {by}={divisor}")

    def check_compute_options(self) -> None:
        """`remat` and `attention_impl` name known choices."""
        remat_policy(self.remat)
        if self.attention_impl not in attention_impls():
            raise ValueError(f"{type(self).__name__}.attention_impl={self.attention_impl!r} is not one "
                             f"of {attention_impls()}")


def json_ready(value):
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def _tuples(value):
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _dataclass_in(hint):
    """The dataclass named by a field's type hint (also inside `X | None`), else None."""
    for t in typing.get_args(hint) or (hint,):
        if dataclasses.is_dataclass(t):
            return t
    return None
