"""The released SEED-X artefacts (docs/release_tree.md): how each is recognised, which config and mapping
table it converts with, and where a release tree keeps it."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Callable

import jax.numpy as jnp

from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.params import AGENT_RULES, RESAMPLERS, agent_source
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.detokenizer.params import DETOKENIZER_RULES, detokenizer_source
from seedx_jax.diffusion.schedulers import NoiseScheduleConfig
from seedx_jax.diffusion.unet import UNetConfig
from seedx_jax.diffusion.vae import VAEConfig
from seedx_jax.llama import LlamaConfig
from seedx_jax.llama.params import LLAMA_HF_RULES, is_lora
from seedx_jax.lora import LoraConfig
from seedx_jax.outputs import with_article
from seedx_jax.paths import resolve
from seedx_jax.sources import MergedLora, Renamed, TensorSource, open_tensors
from seedx_jax.vision.params import QWEN_VL_CHAT_PREFIX, vit_rules
from seedx_jax.vision.vit import VisionConfig
from seedx_jax.weights import Rule


class ArtefactError(ValueError):
    pass


@dataclasses.dataclass
class Artefact:
    """Everything one model conversion needs."""

    kind: str  # checkpoint kind (seedx_jax.checkpoint.KINDS)
    config: Any
    source: TensorSource
    table: tuple[Rule, ...]
    allow_missing: Callable[[str], bool] | None = None
    options: dict = dataclasses.field(default_factory=dict)  # recorded in the manifest
    merged: list[str] = dataclasses.field(default_factory=list)  # LoRA keys folded into base weights
    inputs: list[str] = dataclasses.field(default_factory=list)  # the files and folders given: never outputs


def detect(keys: list[str]) -> str:
    """What a state dict holds, from its key names."""
    keys = set(keys)

    def has(prefix):
        return any(k.startswith(prefix) for k in keys)

    if has("resampler.latents") or has("resampler.proj_in"):
        return "detokenizer"
    if has("input_resampler.") or has("output_resampler.") or "patch_pos_embed" in keys:
        return "agent"
    if "conv1.weight" in keys and has("transformer.resblocks."):
        return "vit"
    if has(QWEN_VL_CHAT_PREFIX + "conv1"):
        return "qwen_vl_chat"
    if has("model.embed_tokens") or has("base_model.model.model.embed_tokens"):
        return "llama"
    if has("down_blocks.") and "conv_in.weight" in keys:
        return "unet"
    if has("encoder.conv_in") and has("decoder."):
        return "vae"
    return "unknown"


_COMMANDS = {"vit": "vit", "qwen_vl_chat": "vit", "llama": "llama", "agent": "agent", "detokenizer": "detokenizer"}


def expect(source: TensorSource, wanted: tuple[str, ...], what: str, name: str) -> str:
    found = detect(source.keys())
    if found == "unknown":
        raise ArtefactError(f"{name} is not {what}: its tensor names match no checkpoint layout this converter knows")
    if found not in wanted:
        # an --llm given the agent file: the hint is the option's, not another command
        hint = "" if name.startswith("--") else (
            f" (convert it with `seedx-jax convert {_COMMANDS[found]}`)" if found in _COMMANDS else "")
        raise ArtefactError(f"{name} holds {with_article(found)} checkpoint, not {what}{hint}")
    return found


def _read_spec(spec: str | None) -> tuple[str | None, dict]:
    """(preset name or None, JSON fields) of a `--config` value: a preset name, or a JSON file of fields
    that may name a `preset`.

    Raises:
      ValueError: a JSON file that cannot be read or holds no object.
    """
    if spec is None or not spec.endswith(".json"):
        return spec, {}
    try:
        with open(resolve(spec)) as f:
            fields = json.load(f)
    except OSError as err:
        raise ValueError(f"cannot read it ({err.strerror})") from None
    if not isinstance(fields, dict):
        raise ValueError("the file holds no JSON object of fields")
    fields = dict(fields)
    return fields.pop("preset", None), fields


def build_config(cls, spec: str | None, default: str, *, found=(), fixed=()) -> tuple[Any, dict]:
    """The config of one artefact, and {source: the fields it set} for the manifest.

    Layers, a later one winning field by field: the preset (named by `spec`, by the JSON's `preset`, or
    `default`); `found`, (source, fields, always) read from the files (sizes from tensor shapes, a
    diffusers or Hugging Face config.json), skipped under a preset the user named unless `always`; the
    fields of a JSON `spec`; `fixed`, (source, fields) that the weights decide whatever the config says.

    Raises:
      ValueError: an unknown preset, an unreadable JSON file, or fields the config refuses.
    """
    preset, given = _read_spec(spec)
    layers = [(source, fields) for source, fields, always in found if always or preset is None]
    layers = [(source, fields) for source, fields in [*layers, (f"--config {spec}", given), *fixed] if fields]
    merged: dict = {}
    for _, fields in layers:
        merged = _merged(merged, fields)
    config = cls.preset(preset or default).override(merged)
    origin = {f"preset {preset or default}": "the fields not listed below"}
    origin.update({source: _leaf_paths(fields) for source, fields in layers})
    return config, origin


def _configured(cls, spec: str | None, default: str, files: str, *, found=(), fixed=()) -> tuple[Any, dict]:
    """`build_config`, its errors as one ArtefactError naming `--config spec`, or `files` when the config
    came from them alone."""
    try:
        return build_config(cls, spec, default, found=found, fixed=fixed)
    except ValueError as err:
        where = f"--config {spec}" if spec else f"the {cls.__name__} read from {files} (--config sets it)"
        raise ArtefactError(f"{where}: {err}") from None


def _merged(base: dict, over: dict) -> dict:
    """`base` with `over`'s fields, nested mappings merged field by field."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _leaf_paths(fields: dict, prefix: str = "") -> list[str]:
    return sorted(p for k, v in fields.items()
                  for p in (_leaf_paths(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k]))


def _shapes(source: TensorSource, keys) -> list[tuple[int, ...]] | None:
    """The shapes of `keys`; None when one is missing (the tensor plan then reports it)."""
    present = set(source.keys())
    return [tuple(source.shape(k)) for k in keys] if all(k in present for k in keys) else None


def _count(source: TensorSource, pattern: str) -> int:
    """How many of `pattern.format(0)`, `pattern.format(1)`, ... the source holds (layers of a stack)."""
    present, n = set(source.keys()), 0
    while pattern.format(n) in present:
        n += 1
    return n


def _vit_sizes(source: TensorSource) -> dict:
    """The VisionConfig sizes the ViT's tensor shapes give; the head counts and the input size are not
    among them (they stay the preset's)."""
    shapes = _shapes(source, ("conv1.weight", "positional_embedding", "transformer.resblocks.0.mlp.c_fc.weight",
                              "attn_pool.query"))
    if shapes is None:
        return {}
    (width, _, patch, _), (positions, _), (mlp, _), (queries, output) = shapes
    return dict(width=width, patch_size=patch, pos_table_grid=math.isqrt(positions), mlp_dim=mlp, output_dim=output,
                pool_grid=math.isqrt(queries), layers=_count(source, "transformer.resblocks.{}.attn.in_proj.weight"))


def _resampler_sizes(source: TensorSource, prefix: str) -> dict:
    """One agent Resampler's sizes from its `query` [g*g, E] and `kv_proj` [E, K] (absent when K = E)."""
    shapes = _shapes(source, (prefix + "query",))
    if shapes is None:
        return {}
    (queries, embed), = shapes
    kv = _shapes(source, (prefix + "kv_proj.weight",))
    return dict(grid_size=math.isqrt(queries), embed_dim=embed, kv_dim=kv[0][1] if kv else embed)


def _resampler_xl_sizes(source: TensorSource, heads: int) -> dict:
    """The de-tokenizer ResamplerXL's sizes from its tensor shapes: latents [1, Q, D], proj_in [D, E],
    the layers, the attention width (= heads x dim_head: `heads` kept, dim_head follows when it
    divides), the feed-forward width and the two U-Net projections."""
    p = "resampler."
    shapes = _shapes(source, [p + k for k in ("latents", "proj_in.weight", "layers.0.0.to_q.weight",
                                              "layers.0.1.1.weight", "unet_proj_1.weight", "unet_proj_2.weight")])
    if shapes is None:
        return {}
    (_, queries, dim), (_, embedding), (inner, _), (hidden, _), (out1, _), (out2, _) = shapes
    sizes = dict(num_queries=queries, dim=dim, embedding_dim=embedding, ff_mult=hidden // dim,
                 depth=_count(source, p + "layers.{}.0.to_q.weight"), output1_dim=out1, output2_dim=out2)
    if inner % heads == 0:  # otherwise the tensor plan reports to_q's shape: a JSON config sets heads, dim_head
        sizes["dim_head"] = inner // heads
    return sizes


# how our modules compute (set by presets and --config), not what the weights are
_COMPUTE_FIELDS = ("dtype", "param_dtype", "attention_impl", "scan_layers", "remat")


def _diffusers_fields(cls, folder: str) -> tuple[str, dict] | None:
    """(file, fields) of `folder/config.json` through `cls.from_diffusers`; None without the file."""
    file = os.path.join(folder, "config.json")
    if not os.path.isfile(file):
        return None
    config = _parse_json(file, cls.from_diffusers)
    return file, {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in _COMPUTE_FIELDS}


def _parse_json(file: str, parse: Callable[[dict], Any]):
    """`parse(json of file)`; a missing field or a refused value becomes an ArtefactError naming the file."""
    try:
        with open(file) as f:
            return parse(json.load(f))
    except KeyError as err:
        raise ArtefactError(f"{file}: no field {err}") from None
    except ValueError as err:
        raise ArtefactError(f"{file}: {err}") from None


def with_param_dtype(config, dtype: str | None):
    """`config` with every nested `param_dtype` set to `dtype` (None: unchanged)."""
    if dtype is None:
        return config
    jnp.dtype(dtype)  # validates the name
    changes = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "param_dtype":
            changes[field.name] = dtype
        elif dataclasses.is_dataclass(value) and hasattr(value, "replace"):
            changes[field.name] = with_param_dtype(value, dtype)
    return dataclasses.replace(config, **changes)


def _lora_rank(source: TensorSource) -> int | None:
    ranks = {source.shape(k)[0] for k in source.keys() if ".lora_A." in k}
    if len(ranks) > 1:
        raise ArtefactError(f"LoRA ranks differ between layers ({sorted(ranks)}); cannot build one LoRA config")
    return ranks.pop() if ranks else None


def _with_lora(source: TensorSource, llm: LlamaConfig, merge: bool, alpha: float | None):
    """(source, llm config, merged keys): LoRA folded in, or kept as the config's LoRA branch."""
    rank = _lora_rank(source)
    if rank is None:
        return source, llm, []
    alpha = float(rank if alpha is None else alpha)  # SEED-X: alpha = r = 32 (scaling 1.0)
    if merge:
        merged = MergedLora(source, alpha / rank)
        return merged, llm.replace(lora=None), merged.merged
    return source, llm.replace(lora=LoraConfig(rank=rank, alpha=alpha)), []


def _fresh_lora(llm: LlamaConfig) -> Callable[[str], bool] | None:
    """A config asking for LoRA the source lacks starts it at its init (B = 0: the same function)."""
    return is_lora if llm.lora is not None else None


def _llama_fields(folder: str | None) -> tuple[str, dict] | None:
    """(file, the architecture fields of `folder/config.json`); None without the file.

    Raises:
      ArtefactError: a config.json that lacks a field or asks for what LlamaConfig does not support.
    """
    file = folder and os.path.join(folder, "config.json")
    if not file or not os.path.isfile(file):
        return None
    found = _parse_json(file, LlamaConfig.from_hf_dict)
    names = {f.name for f in dataclasses.fields(LlamaConfig)} & set(found.to_hf_dict())
    return file, {name: getattr(found, name) for name in sorted(names)}


def vit_artefact(path: str, *, config: str | None = None, dtype: str | None = None) -> Artefact:
    """`qwen_vit_G.pt`, or a Qwen-VL-Chat checkpoint (file or folder): its `transformer.visual.*` keys.
    The sizes come from the tensor shapes (`build_config`), the rest from qwen_vit_g_448."""
    source = open_tensors(path)
    if expect(source, ("vit", "qwen_vl_chat"), "a Qwen-VL ViT", path) == "qwen_vl_chat":
        source = Renamed(source, strip=QWEN_VL_CHAT_PREFIX)
    cfg, origin = _configured(VisionConfig, config, "qwen_vit_g_448", path,
                              found=[(f"tensor shapes of {path}", _vit_sizes(source), False)])
    cfg = with_param_dtype(cfg, dtype)
    return Artefact("vit", cfg, source, vit_rules(cfg.heads),
                    options={"config": config, "dtype": dtype, "config_from": origin}, inputs=[path])


def llama_artefact(folder: str, *, dtype: str | None = None, merge_lora: bool = False,
                   lora_alpha: float | None = None) -> Artefact:
    """A Hugging Face Llama folder (config.json + safetensors / bin, sharded or not)."""
    source = open_tensors(folder)
    expect(source, ("llama",), "a Llama model", folder)
    found = _llama_fields(folder)
    if found is None:
        raise ArtefactError(f"{folder}: no config.json (a Hugging Face Llama folder has one)")
    source, cfg, merged = _with_lora(source, LlamaConfig(**found[1]), merge_lora, lora_alpha)
    options = {"dtype": dtype, "merge_lora": merge_lora, "lora_alpha": lora_alpha}
    return Artefact("llama", with_param_dtype(cfg, dtype), source, LLAMA_HF_RULES,
                    allow_missing=_fresh_lora(cfg), options=options, merged=merged, inputs=[folder])


def agent_artefact(checkpoint: str, llm: str | None = None, *, config: str | None = None, dtype: str | None = None,
                   merge_lora: bool = False, lora_alpha: float | None = None) -> Artefact:
    """The agent file (release form: resamplers + patch_pos_embed; training / zero-to-fp32 form: also
    peft `llm.base_model.model.*` keys) over the `llm/` folder. The LLM's architecture comes from the
    folder's config.json (under a preset too), the resampler sizes from the tensor shapes, the rest
    from seed_x; a JSON `config`'s fields win (`build_config`)."""
    agent = open_tensors(checkpoint)
    expect(agent, ("agent",), "a SEED-X agent", checkpoint)
    base = None
    if llm is not None:
        base = open_tensors(llm)
        expect(base, ("llama",), "a Llama model (--llm takes the release's seed_x*/llm/ folder or a Llama-2 "
               "Hugging Face folder)", f"--llm {llm}")
    llm_config = _llama_fields(llm)
    found = [(llm_config[0], {"llm": llm_config[1]}, True)] if llm_config else []
    sizes = {name: fields for name in RESAMPLERS if (fields := _resampler_sizes(agent, name + "."))}
    found.append((f"tensor shapes of {checkpoint}", sizes, False))
    cfg, origin = _configured(AgentConfig, config, "seed_x", " and ".join([checkpoint] + ([llm] if llm else [])),
                              found=found)
    source, llm_cfg, merged = _with_lora(agent_source(agent, base), cfg.llm, merge_lora, lora_alpha)
    cfg = with_param_dtype(cfg.replace(llm=llm_cfg), dtype)
    options = {"config": config, "dtype": dtype, "merge_lora": merge_lora, "lora_alpha": lora_alpha,
               "config_from": origin}
    return Artefact("agent", cfg, source, AGENT_RULES, allow_missing=_fresh_lora(cfg.llm), options=options,
                    merged=merged, inputs=[checkpoint] + ([llm] if llm else []))


def _scheduler_fields(sdxl: str | None) -> dict | None:
    """The SDXL folder's noise-schedule settings, recorded in the manifest; fields that differ from the
    `NoiseScheduleConfig` defaults the samplers use are listed under `differs_from_samplers`."""
    file = sdxl and os.path.join(sdxl, "scheduler", "scheduler_config.json")
    if not file or not os.path.isfile(file):
        return None
    with open(file) as f:
        found = json.load(f)
    ours = NoiseScheduleConfig().to_dict()
    fields = {k: found[k] for k in ours if k in found}
    return {**fields, "differs_from_samplers": sorted(k for k, v in fields.items() if v != ours[k])}


def detokenizer_artefact(checkpoint: str, sdxl: str | None = None, *, config: str | None = None,
                         dtype: str | None = None) -> Artefact:
    """A de-tokenizer stage file over a diffusers SDXL folder (`unet/`, `vae/`). The U-Net and VAE come
    from the folder's `unet/config.json` and `vae/config.json`, the resampler's sizes from the tensor
    shapes (its head counts from stage1), unless `config` names a preset; a JSON `config`'s fields
    win (`build_config`). The stage follows the checkpoint's `unet.conv_in.weight` (8 input channels:
    stage 2) whatever the config says."""
    stage_file = open_tensors(checkpoint)
    expect(stage_file, ("detokenizer",), "a SEED-X de-tokenizer", checkpoint)
    unet = vae = None
    if sdxl is not None:
        for part in ("unet", "vae"):
            if not os.path.isdir(os.path.join(sdxl, part)):
                raise ArtefactError(f"{sdxl}: no {part}/ folder (expected a diffusers SDXL folder)")
        unet, vae = open_tensors(os.path.join(sdxl, "unet")), open_tensors(os.path.join(sdxl, "vae"))
        expect(unet, ("unet",), "a diffusers U-Net", os.path.join(sdxl, "unet"))
        expect(vae, ("vae",), "a diffusers VAE", os.path.join(sdxl, "vae"))
    found = []
    for part, cls in (("unet", UNetConfig), ("vae", VAEConfig)):
        if sdxl is not None and (read := _diffusers_fields(cls, os.path.join(sdxl, part))):
            found.append((read[0], {part: read[1]}, False))
    heads = DetokenizerConfig.preset("stage1").resampler.heads
    found.append((f"tensor shapes of {checkpoint}", {"resampler": _resampler_xl_sizes(stage_file, heads)}, False))
    fixed = []
    if "unet.conv_in.weight" in stage_file.keys():
        fixed.append((f"unet.conv_in.weight of {checkpoint}",
                      {"unet": {"in_channels": stage_file.shape("unet.conv_in.weight")[1]}}))
    files = " and ".join([checkpoint] + ([sdxl] if sdxl else []))
    cfg, origin = _configured(DetokenizerConfig, config, "stage1", files, found=found, fixed=fixed)
    options = {"config": config, "dtype": dtype, "stage": 2 if cfg.edits else 1,
               "scheduler": _scheduler_fields(sdxl), "config_from": origin}
    return Artefact("detokenizer", with_param_dtype(cfg, dtype), detokenizer_source(stage_file, unet, vae),
                    DETOKENIZER_RULES, options=options, inputs=[checkpoint] + ([sdxl] if sdxl else []))


# --------------------------------------------------------------------------------------------------
# Release trees

MODELS = {"seed_x": ("seed_x", 1), "seed_x_i": ("seed_x_i", 1), "seed_x_edit": ("seed_x_edit", 2)}  # template, stage


@dataclasses.dataclass
class Release:
    vit: str
    tokenizer: str
    models: dict[str, tuple[str, str | None]]  # name -> (agent file, llm folder)
    sdxl: str | None
    detokenizers: dict[int, str]  # stage -> checkpoint file


def _first_file(folder: str, names: tuple[str, ...]) -> str | None:
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def find_release(root: str) -> Release:
    """Recognise the SEED-X release layout under `root` (docs/release_tree.md)."""
    if os.path.exists(root) and not os.path.isdir(root):
        raise ArtefactError(f"{root} is a file, not a release directory (docs/release_tree.md)")
    if not os.path.isdir(root):
        raise ArtefactError(f"{root}: no such directory")
    vit = _first_file(os.path.join(root, "QwenViT"), ("qwen_vit_G.pt",))
    tokenizers = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "tokenizer.model")))
    models = {}
    for name in MODELS:
        agent = _first_file(os.path.join(root, name, "agent"), ("pytorch_model.bin", "model.safetensors"))
        if agent is not None:
            llm = os.path.join(root, name, "llm")
            models[name] = (agent, llm if os.path.isdir(llm) else None)
    sdxl = os.path.join(root, "stable-diffusion-xl-base-1.0")
    detokenizers = {}
    for stage, folder in ((1, "first_stage"), (2, "second_stage")):
        file = _first_file(os.path.join(root, "seed_detokenizer", folder), ("pytorch_model.bin", "model.safetensors"))
        if file is not None:
            detokenizers[stage] = file
    missing = [what for what, found in (("QwenViT/qwen_vit_G.pt", vit), ("a tokenizer folder", tokenizers),
                                         ("a seed_x*/agent checkpoint", models)) if not found]
    if missing:
        raise ArtefactError(f"{root} is not a SEED-X release tree: it lacks {', '.join(missing)}")
    if len(tokenizers) > 1:
        raise ArtefactError(f"{root}: several tokenizer folders {tokenizers}")
    return Release(vit, os.path.join(root, tokenizers[0]), models, sdxl if os.path.isdir(sdxl) else None, detokenizers)

