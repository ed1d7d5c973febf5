"""Export a seedx_jax checkpoint back to PyTorch files in the released key layout, and LoRA as a PEFT
adapter folder.

    vit          -> qwen_vit_G.pt
    llama        -> HF folder: config.json + model.safetensors (sharded above --max-shard-size)
    agent        -> agent/pytorch_model.bin (resamplers, patch_pos_embed) + llm/ (HF folder)
    detokenizer  -> pytorch_model.bin (resampler.*, unet.*) + vae/diffusion_pytorch_model.safetensors
    any LoRA     -> adapter/ (adapter_config.json + adapter_model.safetensors), or folded in (merge_lora)

The mapping tables are the conversion's, read backwards, so convert -> export gives every tensor the
model uses back bit-identical, in the dtype each had in the source (recorded in the manifest).
Keys a conversion ignores (rotary `inv_freq`, peft's `original_module` copies) are not written.
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
from typing import Iterable, Iterator

import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from seedx_jax.agent.params import AGENT_RULES
from seedx_jax.checkpoint import load_model, read_manifest
from seedx_jax.detokenizer.params import DETOKENIZER_RULES
from seedx_jax.llama.params import LLAMA_HF_RULES, is_lora
from seedx_jax.lora import merge_lora
from seedx_jax.nn.buffer import Buffer
from seedx_jax.nn.stack import LOGICAL_AXES
from seedx_jax.outputs import atomic_output, check_target, write_marker
from seedx_jax.progress import Progress
from seedx_jax.vision.params import vit_rules
from seedx_jax.weights import Slot, export_plan, export_tensors, path_str

_SAFETENSORS_NAMES = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
                      np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int64): "I64", np.dtype(np.int32): "I32",
                      np.dtype(np.int16): "I16", np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8",
                      np.dtype(np.bool_): "BOOL"}


def write_safetensors(folder: str, name: str, tensors: Iterable[tuple[str, np.ndarray]],
                      max_shard_bytes: int = 2 << 30) -> list[str]:
    """`name`.safetensors, or `name`-0000k-of-0000n.safetensors + `name`.safetensors.index.json
    (Hugging Face's sharding); holds at most one shard in memory. Returns the files written."""
    written, shard, size = [], {}, 0
    for key, value in tensors:
        if shard and size + value.nbytes > max_shard_bytes:
            written.append(_write_shard(folder, name, len(written), shard))
            shard, size = {}, 0
        shard[key] = value
        size += value.nbytes
    written.append(_write_shard(folder, name, len(written), shard))
    if len(written) == 1:
        final = os.path.join(folder, f"{name}.safetensors")
        os.replace(written[0], final)
        return [final]
    finals, weight_map = [], {}
    for i, tmp in enumerate(written):
        final = os.path.join(folder, f"{name}-{i + 1:05d}-of-{len(written):05d}.safetensors")
        os.replace(tmp, final)
        finals.append(final)
        with open(final, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            keys = [k for k in json.loads(f.read(n)) if k != "__metadata__"]
        weight_map.update({k: os.path.basename(final) for k in keys})
    index = os.path.join(folder, f"{name}.safetensors.index.json")
    with open(index, "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f, indent=1)
    return finals + [index]


def _write_shard(folder: str, name: str, index: int, tensors: dict[str, np.ndarray]) -> str:
    path = os.path.join(folder, f"{name}.shard{index}.tmp")
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for key, value in tensors.items():
        header[key] = {"dtype": _SAFETENSORS_NAMES[value.dtype], "shape": list(value.shape),
                       "data_offsets": [offset, offset + value.nbytes]}
        offset += value.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # data aligned to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for value in tensors.values():
            f.write(np.ascontiguousarray(value).tobytes())
    return path


def write_torch(path: str, tensors: Iterable[tuple[str, np.ndarray]]) -> None:
    """One `torch.save` state dict (the released `.bin` / `.pt` files); holds the whole file in memory."""
    import torch

    def to_torch(a: np.ndarray) -> torch.Tensor:
        if a.dtype == ml_dtypes.bfloat16:
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(a.copy())

    torch.save({k: to_torch(v) for k, v in tensors}, path)


@dataclasses.dataclass
class _Exporter:
    """Reads exportable tensors of a loaded model: rows of stacked variables, cast per key."""

    model: nnx.Module
    table: tuple
    dtypes: dict  # manifest: {"default": dtype, "exceptions": {key: dtype}} or {}
    dtype: str | None  # override

    def __post_init__(self):
        flat = list(nnx.to_flat_state(nnx.state(self.model, (nnx.Param, Buffer))))
        self.values = {path_str(p): v for p, v in flat}
        self.shapes = {n: tuple(v.shape) for n, v in self.values.items()}
        self.stacked = {n for n, v in self.values.items()
                        if (v.get_metadata().get(LOGICAL_AXES) or (None,))[0] == "layers"}

    def tensors(self, keep) -> Iterator[tuple[str, np.ndarray]]:
        """(source key, tensor) for keys `keep` accepts; LoRA variables are never included here."""
        plan = export_plan(self.shapes, self.stacked, self.table, skip=is_lora)
        plan = {k: v for k, v in plan.items() if keep(k)}
        for key, value in export_tensors(plan, self._read):
            yield key, value.astype(self._dtype_of(key, value.dtype), copy=False)

    def lora_tensors(self, prefix: str) -> Iterator[tuple[str, np.ndarray]]:
        """The LoRA A/B variables under PEFT's adapter names (`base_model.model.` + HF module path)."""
        plan = export_plan(self.shapes, self.stacked, self.table, skip=lambda name: not is_lora(name))
        for key, value in export_tensors(plan, self._read):
            yield "base_model.model." + key[len(prefix):], value.astype(self._dtype_of(key, value.dtype), copy=False)

    def _read(self, slot: Slot) -> np.ndarray:
        value = self.values[slot.name][...]
        return np.asarray(value if slot.row is None else value[slot.row])

    def _dtype_of(self, key: str, current) -> np.dtype:
        name = self.dtype or self.dtypes.get("exceptions", {}).get(key, self.dtypes.get("default"))
        return jnp.dtype(name) if name else current


def write_adapter(folder: str, exporter: _Exporter, lora, *, prefix: str = "") -> None:
    os.makedirs(folder, exist_ok=True)
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank, "lora_alpha": lora.alpha,
              "lora_dropout": lora.dropout, "target_modules": list(lora.target_modules), "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": None}
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    write_safetensors(folder, "adapter_model", exporter.lora_tensors(prefix))


def _hf_folder(folder: str, llm_config, tensors, max_shard_bytes: int) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "torch_dtype": "float32", **llm_config.to_hf_dict()}, f, indent=1)
    write_safetensors(folder, "model", tensors, max_shard_bytes)


def _strip(prefix: str, tensors):
    return ((k[len(prefix):], v) for k, v in tensors)


def export_checkpoint(path: str, out: str, *, merge: bool = False, dtype: str | None = None,
                      max_shard_bytes: int = 2 << 30, progress: Progress | None = None,
                      overwrite: bool = False) -> list[str]:
    """Write the released PyTorch files of the model checkpoint at `path` into the directory `out`
    (new, empty, or an earlier export with `overwrite`; `seedx_jax.outputs` policy) -> the files written,
    relative to `out`. `out` also gets a `manifest.json` that marks it as an export of ours."""
    progress = progress or Progress(quiet=True)
    manifest = read_manifest(path)
    check_target(out, "export", inputs=[path], overwrite=overwrite)  # before the model loads
    kind = manifest["kind"]
    with progress.stage(f"loading the {kind} checkpoint"):
        model = load_model(path, kind)
    llm_config = model.config.llm if kind == "agent" else model.config if kind == "llama" else None
    lora = None if llm_config is None else llm_config.lora
    if lora is not None and merge:
        merge_lora(model)
    table = {"vit": lambda: vit_rules(model.config.heads), "llama": lambda: LLAMA_HF_RULES,
             "agent": lambda: AGENT_RULES, "detokenizer": lambda: DETOKENIZER_RULES}[kind]()
    exporter = _Exporter(model, table, manifest.get("source", {}).get("dtypes", {}), dtype)
    with atomic_output(out, "export", inputs=[path], overwrite=overwrite) as tmp, \
            progress.stage(f"exporting to {out}"):
        if kind == "vit":
            write_torch(os.path.join(tmp, "qwen_vit_G.pt"), exporter.tensors(lambda k: True))
        elif kind == "llama":
            _hf_folder(tmp, llm_config.replace(lora=None), exporter.tensors(lambda k: True), max_shard_bytes)
        elif kind == "agent":
            os.makedirs(os.path.join(tmp, "agent"))
            write_torch(os.path.join(tmp, "agent", "pytorch_model.bin"),
                        exporter.tensors(lambda k: not k.startswith("llm.")))
            _hf_folder(os.path.join(tmp, "llm"), llm_config.replace(lora=None),
                       _strip("llm.", exporter.tensors(lambda k: k.startswith("llm."))), max_shard_bytes)
        else:
            write_torch(os.path.join(tmp, "pytorch_model.bin"), exporter.tensors(lambda k: not k.startswith("vae.")))
            os.makedirs(os.path.join(tmp, "vae"))
            write_safetensors(os.path.join(tmp, "vae"), "diffusion_pytorch_model",
                              _strip("vae.", exporter.tensors(lambda k: k.startswith("vae."))), max_shard_bytes)
        if lora is not None and not merge:
            write_adapter(os.path.join(tmp, "adapter"), exporter, lora, prefix="llm." if kind == "agent" else "")
        write_marker(tmp, "export", model_kind=kind, source=os.path.abspath(path), merge_lora=merge, dtype=dtype)
    return sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
