"""Dense layer with logical axis names and optional peft-style LoRA (docs/llm.md#lora)."""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from seedx_jax.nn.dropout import dropout


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    """LoRA hyper-parameters of one layer: y = x W + dropout(x) A B * (alpha / rank)."""

    rank: int
    alpha: float
    dropout: float = 0.0

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank


class Linear(nnx.Module):
    """`y = x @ kernel (+ bias)`, kernel `[in, out]` (the transpose of a torch Linear weight).

    With `lora`, adds the peft LoRA branch: `lora_a` `[in, r]` (kaiming-uniform, a=sqrt(5), as
    peft) and `lora_b` `[r, out]` (zeros), both `nnx.LoRAParam`. After `seedx_jax.lora.merge_lora`
    the delta lives in `kernel` and `lora_merged` switches the branch off, as peft's `merged`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        logical_axes: tuple[str, str],
        use_bias: bool = False,
        lora: LoraSpec | None = None,
        dtype: jnp.dtype = jnp.float32,
        param_dtype: jnp.dtype = jnp.float32,
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        self.dtype = dtype
        self.kernel = nnx.Param(
            init_std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype),
            logical_axes=logical_axes,
        )
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=logical_axes[1:])
            if use_bias else None
        )
        self.lora = lora
        self.lora_merged = False
        if lora is not None:
            bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) on fan_in
            self.lora_a = nnx.LoRAParam(
                jax.random.uniform(rngs.params(), (in_features, lora.rank), param_dtype, -bound, bound),
                logical_axes=(logical_axes[0], "lora_rank"),
            )
            self.lora_b = nnx.LoRAParam(
                jnp.zeros((lora.rank, out_features), param_dtype),
                logical_axes=("lora_rank", logical_axes[1]),
            )

    def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """x `[..., in]` -> `[..., out]` in `self.dtype`. `dropout_rng=None` means no LoRA dropout; with a key,
        the LoRA branch reads `nn.dropout.dropout(x)` (its own mask per layer, as peft's per-adapter
        `nn.Dropout`)."""
        lead = x.shape[:-1]
        # 2-D matmuls: XLA:CPU computes the kernel gradient of a [B, T, in] input ~2x slower.
        x = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        y = x @ self.kernel[...].astype(self.dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        if self.lora is not None and not self.lora_merged:
            h = x
            if dropout_rng is not None and self.lora.dropout > 0.0:
                h = dropout(h, self.lora.dropout, dropout_rng)
            delta = (h @ self.lora_a[...].astype(self.dtype)) @ self.lora_b[...].astype(self.dtype)
            y = y + delta * self.lora.scaling
        return y.reshape(*lead, y.shape[-1])

    def lora_delta(self) -> jax.Array:
        """`scaling * A @ B`, shaped like `kernel` (works on stacked `[L, in, out]` kernels too)."""
        return (self.lora_a[...] @ self.lora_b[...]) * self.lora.scaling
