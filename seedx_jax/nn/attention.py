"""Scaled dot-product attention with a selectable kernel.

`xla` and `cudnn` go through `jax.nn.dot_product_attention` (which handles grouped-query attention
without repeating k/v). Other kernels, e.g. a TPU Pallas splash/flash kernel, plug in with
`register_attention_impl(name, fn)` and are then selected by name from model configs.
"""
from __future__ import annotations

import functools
from typing import Callable, Protocol

import jax


class AttentionFn(Protocol):
    def __call__(self, q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None,
                 is_causal: bool) -> jax.Array: ...


def _jax_attention(q, k, v, *, mask, is_causal, implementation):
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                        implementation=implementation)


_IMPLS: dict[str, AttentionFn] = {
    "xla": functools.partial(_jax_attention, implementation="xla"),
    "cudnn": functools.partial(_jax_attention, implementation="cudnn"),
}


def register_attention_impl(name: str, fn: AttentionFn) -> None:
    """Make `fn(q, k, v, *, mask, is_causal)` selectable as `attention_impl=name`."""
    _IMPLS[name] = fn


def attention_impls() -> tuple[str, ...]:
    return tuple(_IMPLS)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, mask: jax.Array | None = None,
              is_causal: bool = False, impl: str = "xla") -> jax.Array:
    """q `[B, T, N, H]`, k/v `[B, S, K, H]` (N % K == 0), mask `[B, 1|N, T, S]` bool -> `[B, T, N, H]`."""
    try:
        fn: Callable = _IMPLS[impl]
    except KeyError:
        raise ValueError(f"attention_impl={impl!r} is not one of {sorted(_IMPLS)}") from None
    return fn(q, k, v, mask=mask, is_causal=is_causal)
