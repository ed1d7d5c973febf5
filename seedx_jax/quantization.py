"""Weight-only int8 for the LLM's dense layers, with qwix's quantized arrays (docs/precision.md).

Every `Linear` of a Llama (the stacked per-layer projections and `lm_head`) becomes an `Int8Linear`:
int8 weights with one fp32 scale per output channel (and per layer, for stacked kernels), absmax
calibrated; activations stay in the compute dtype and qwix's `dot_general` dequantizes the weight
into the matmul. The embedding table stays in float (a decode step reads one row of it).

Why not `qwix.quantize_model(model, qwix.PtqProvider(...))`: its NNX path swaps a weight for its
quantized form by `setattr` on the module that is running the matmul. Our scanned layers run inside
`lax.scan` on modules re-merged in the scan body, so that module lives in another trace (Flax raises
`TraceContextError`) and would be thrown away anyway; and `x @ kernel` is a jitted `jnp.matmul`,
whose cached trace the interception never sees (the model silently stays in float). Quantizing the
stacked kernels once, up front, with `qwix.quantize` keeps the scan as it is: it slices `qvalue`
and `scale` per layer like any other parameter.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import qwix
from flax import nnx

from seedx_jax.nn.linear import Linear

_DOT_LAST_FIRST = (((1,), (0,)), ((), ()))  # x [N, in] . w [in, out]


class QuantizedWeight(nnx.Variable):
    """A frozen quantized weight or its scales: not an `nnx.Param`, so no optimizer trains it."""


class Int8Linear(nnx.Module):
    """`Linear` with an int8 kernel: `y = x @ (qvalue * scale) (+ bias)` in the compute dtype.

    `qvalue` int8 `[..., in, out]` (leading stacked-layer axes kept), `scale` fp32 `[..., 1, out]`.
    Built from a float `Linear` by `from_linear`; inference only (`dropout_rng` is accepted and
    ignored, so it is a drop-in replacement inside the model's layers).
    """

    def __init__(self, qvalue: QuantizedWeight, scale: QuantizedWeight, bias: nnx.Param | None,
                 dtype: jnp.dtype):
        self.qvalue, self.scale, self.bias, self.dtype = qvalue, scale, bias, dtype

    @classmethod
    def from_linear(cls, linear: Linear) -> "Int8Linear":
        """Quantize `linear.kernel` per output channel (and per stacked layer).

        Raises:
          ValueError: the layer has an unmerged LoRA branch (merge it first:
            `seedx_jax.lora.merge_lora`), or its kernel is not floating-point.
        """
        if linear.lora is not None and not linear.lora_merged:
            raise ValueError("int8 weights need the LoRA merged into the kernels first "
                             "(seedx_jax.lora.merge_lora)")
        kernel = linear.kernel
        if not jnp.issubdtype(kernel.dtype, jnp.floating):
            raise ValueError(f"cannot quantize a {kernel.dtype} kernel to int8")
        ndim = kernel[...].ndim
        # every axis but the contracted `in` axis (ndim - 2) gets its own scales
        channels = tuple(a for a in range(ndim) if a != ndim - 2)
        q = qwix.quantize(kernel[...], jnp.int8, channelwise_axes=channels, scale_dtype=jnp.float32)
        axes = kernel.get_metadata().get("logical_axes")
        scale_axes = None if axes is None else (*axes[:-2], None, axes[-1])  # the size-1 axis is not sharded
        return cls(QuantizedWeight(q.qvalue, logical_axes=axes), QuantizedWeight(q.scale, logical_axes=scale_axes),
                   linear.bias, linear.dtype)

    def __call__(self, x: jax.Array, dropout_rng: jax.Array | None = None) -> jax.Array:
        """x `[..., in]` -> `[..., out]` in `self.dtype`."""
        del dropout_rng  # no LoRA branch left to drop out
        lead = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).astype(self.dtype)
        # the scale's dtype is the dequantized weight's: keep the matmul in the compute dtype
        weight = qwix.QArray(self.qvalue[...], self.scale[...].astype(self.dtype), qtype=jnp.int8)
        y = qwix.dot_general(x, weight, _DOT_LAST_FIRST)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.dtype)
        return y.reshape(*lead, y.shape[-1])


def quantize_int8(model: nnx.Module) -> int:
    """In place: every float `Linear` under `model` (an LLM, or an agent: only its `llm` is touched)
    becomes an `Int8Linear`. Returns how many layers were replaced (a stacked module counts once).

    Raises:
      ValueError: as `Int8Linear.from_linear`, or `model` holds no `Linear` to quantize.
    """
    root = getattr(model, "llm", model)
    targets = [(parent, name, child) for _, parent in nnx.iter_modules(root)
               for name, child in vars(parent).items() if isinstance(child, Linear)]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no float Linear layers to quantize to int8")
    for parent, name, linear in targets:
        setattr(parent, name, Int8Linear.from_linear(linear))
    return len(targets)


def weight_bytes(model: nnx.Module) -> int:
    """Bytes of every array in `model`'s state (what one decode step reads at most, cache aside)."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(nnx.state(model)))
