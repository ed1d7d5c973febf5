"""Reduced precision as users pick it: bf16 compute over fp32 master weights, int8 LLM weights.

`Precision` is checked at config time (names, the device, training vs inference) and then applied to
model configs (`configure`) or to loaded models (`apply`). Master weights stay fp32 in every mode:
bf16 is the compute dtype only (`Linear` casts the fp32 kernel into the matmul), so a bf16 train step
updates fp32 parameters and a bf16 pipeline loads the same checkpoints. int8 is weight-only
post-training quantization of the LLM (`seedx_jax.quantization`); docs/precision.md.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import jax
from flax import nnx

from seedx_jax.config_base import ConfigBase
from seedx_jax.lora import merge_lora
from seedx_jax.nn import Linear

COMPUTE_DTYPES = ("float32", "bfloat16")
LLM_WEIGHTS = ("float", "int8")
# CPU flags of native bf16 dot products (AVX-512 BF16, AMX); without them XLA emulates bf16 in fp32,
# slower than fp32 itself.
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class Precision(ConfigBase):
    """compute_dtype: float32 | bfloat16 (every model's matmuls; parameters stay fp32).
    llm_weights: float | int8 (weight-only int8 for the LLM's dense layers, inference only).
    vit_weights / unet_weights: float only (int8 is built for the LLM alone); named so that asking
    for int8 there is refused with the option's name rather than ignored.
    """

    compute_dtype: str = "float32"
    llm_weights: str = "float"
    vit_weights: str = "float"
    unet_weights: str = "float"

    def __post_init__(self):
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"Precision.compute_dtype={self.compute_dtype!r} is not one of {COMPUTE_DTYPES}")
        if self.llm_weights not in LLM_WEIGHTS:
            raise ValueError(f"Precision.llm_weights={self.llm_weights!r} is not one of {LLM_WEIGHTS}")
        for part in ("vit", "unet"):
            value = getattr(self, f"{part}_weights")
            if value != "float":
                raise ValueError(f"Precision.{part}_weights={value!r}: quantized weights are built for the "
                                 "LLM only (llm_weights); use 'float'")

    def check_device(self, devices: Sequence[jax.Device] | None = None) -> None:
        """Refuse bf16 compute on a device without native bf16 matmuls (default: `jax.devices()`).

        Raises:
          ValueError: one line naming the device.
        """
        if self.compute_dtype != "bfloat16":
            return
        for device in devices if devices is not None else jax.devices():
            if not supports_bf16(device):
                raise ValueError(f"Precision.compute_dtype='bfloat16': {device.device_kind} ({device.platform}) "
                                 "has no native bf16 matmuls; use float32")

    def check_training(self) -> None:
        """Raises ValueError: int8 weights are for inference (nothing would train them)."""
        if self.llm_weights != "float":
            raise ValueError(f"Precision.llm_weights={self.llm_weights!r} is inference only; train with 'float' "
                             "weights (compute_dtype='bfloat16' for speed)")

    def configure(self, cfg: Any) -> Any:
        """`cfg` (any model config, nested ones included) with every `dtype` field set to
        `compute_dtype`; `param_dtype` fields are left as they are (fp32 master weights)."""
        changes = {}
        for field in dataclasses.fields(cfg):
            value = getattr(cfg, field.name)
            if field.name == "dtype":
                changes["dtype"] = self.compute_dtype
            elif dataclasses.is_dataclass(value) and hasattr(value, "replace"):
                changes[field.name] = self.configure(value)
        return dataclasses.replace(cfg, **changes)

    def apply(self, model: nnx.Module | None) -> nnx.Module | None:
        """A loaded model with this precision: the same parameters (shared, not copied) under a
        module tree built from `configure(model.config)` (`model` itself when nothing changes); an LLM
        or agent gets int8 weights when `llm_weights == 'int8'` (a LoRA merged first; quantized copies:
        the float kernels are then free to go)."""
        if model is None:
            return None
        config = self.configure(model.config)
        if config == model.config and self.llm_weights == "float":
            return model  # nothing changes (the default): rebuilding a U-Net's module tree takes seconds
        model = rebuild(model, config)  # int8 replaces layers in this new tree, never in the caller's
        if self.llm_weights == "int8" and (hasattr(model, "llm") or hasattr(model, "lm_head")):
            from seedx_jax.quantization import quantize_int8  # qwix: only when asked for

            if any(isinstance(m, Linear) and m.lora is not None and not m.lora_merged
                   for _, m in nnx.iter_modules(model)):
                merge_lora(model)  # inference: a LoRA folds into the kernels that are then quantized
            quantize_int8(model)
        return model


def rebuild(model: nnx.Module, config: Any) -> nnx.Module:
    """`model`'s state under the module tree of `type(model)(config)` (built abstractly).

    Raises:
      ValueError: `config` changes the parameter structure (only compute settings may differ).
    """
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: type(model)(config, rngs=nnx.Rngs(0))))
    state = nnx.state(model)
    if jax.tree.structure(abstract) != jax.tree.structure(state):
        raise ValueError(f"{type(model).__name__}: the new config changes the parameters, not only the compute")
    return nnx.merge(graphdef, state)


def supports_bf16(device: jax.Device) -> bool:
    """Native bf16 matmuls: TPUs, NVIDIA GPUs from Ampere (compute capability 8.0), CPUs with
    AVX-512 BF16 or AMX."""
    if device.platform == "tpu":
        return True
    if device.platform == "gpu":
        capability = getattr(device, "compute_capability", None)
        return capability is None or float(capability) >= 8.0  # ROCm reports none: its bf16 is native
    return bool(_cpu_flags() & set(_CPU_BF16_FLAGS))


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), ()))
    except OSError:  # not Linux: cannot tell, let XLA decide
        return frozenset(_CPU_BF16_FLAGS)
