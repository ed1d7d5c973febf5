"""Scaled dot-product attention with a selectable kernel.

`xla` and `cudnn` go through `jax.nn.dot_product_attention` (which handles grouped-query attention
without repeating k/v). Other kernels, e.g. a TPU Pallas splash/flash kernel, plug in with
`register_attention_impl(name, fn)` and are then selected by name from model configs.
"""
from __future__ import annotations

import functools
from typing import Callable, Protocol

import jax
import jax.numpy as jnp


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


def attention_with_prefix(q: jax.Array, k: jax.Array, v: jax.Array, prefix_k: jax.Array, prefix_v: jax.Array, *,
                          mask: jax.Array, prefix_mask: jax.Array) -> jax.Array:
    """Attention of q over the keys `[prefix; k]` without concatenating them (a KV cache is read in place).

    q `[B, T, N, H]`; k/v `[B, T', K, H]` (the current tokens); prefix_k/v `[B * K, S, H]`, (batch, kv head)
    flattened row-major (e.g. one layer of a KV cache): one batch dim, so XLA:CPU's batched matmuls read the
    prefix where it lies (a `[B, K, ...]` view of a buffer just updated in place makes it copy the buffer),
    N % K == 0; mask `[B, 1, T, T']` and prefix_mask `[B, 1, T|1, S]` bool (True: attend); every query must see
    at least one key. -> `[B, T, N, H]` in q's dtype. Numerics: fp32 logits and softmax, the unnormalised
    probabilities cast to v's dtype, fp32 accumulation and normalisation of the output. Always plain XLA, whatever kernel is registered: decoding is bound by
    reading the cache, which this does once.
    """
    b, t, n, h = q.shape
    heads = k.shape[2]
    g, s = n // heads, prefix_k.shape[1]
    q = q.reshape(b, t, heads, g, h)
    q_rows = q.transpose(0, 2, 3, 1, 4).reshape(b * heads, g * t, h)  # small: the prefix is never transposed
    precision = jax.lax.DotAlgorithmPreset.BF16_BF16_F32 if q.dtype == jnp.bfloat16 else None
    floor = jnp.float32(-0.7 * jnp.finfo(jnp.float32).max)
    dot = functools.partial(jnp.einsum, precision=precision, preferred_element_type=jnp.float32)

    def masked(logits, m):  # [B, K, G, T, S] fp32
        return jnp.where(m[:, :, None], logits * jnp.float32(h ** -0.5), floor)

    # One softmax over both key sets without concatenating anything: a shared max, and the normalisation applied
    # to the small output instead of to the [.., S] probabilities (each pass over those costs 1/H of the cache).
    prefix_logits = masked(dot("iqh,ish->iqs", q_rows, prefix_k).reshape(b, heads, g, t, s), prefix_mask)
    own_logits = masked(dot("btkgh,bskh->bkgts", q, k), mask)
    top = jnp.maximum(prefix_logits.max(axis=-1, keepdims=True), own_logits.max(axis=-1, keepdims=True))
    prefix_weights, own_weights = jnp.exp(prefix_logits - top), jnp.exp(own_logits - top)
    total = prefix_weights.sum(axis=-1, keepdims=True) + own_weights.sum(axis=-1, keepdims=True)  # [B, K, G, T, 1]
    # The outputs' dims in the batched matmuls' natural order (batch, lhs free, rhs free): asking for another
    # order makes XLA:CPU transpose the whole prefix_v instead of the small output.
    out = (dot("iqs,ish->iqh", prefix_weights.astype(v.dtype).reshape(b * heads, g * t, s), prefix_v)
           .reshape(b, heads, g, t, h)
           + dot("bkgts,bskh->bkgth", own_weights.astype(v.dtype), v)) / total
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h).astype(q.dtype)
