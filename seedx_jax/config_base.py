"""What every frozen model-config dataclass shares: presets, `replace`, field checks."""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

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
