"""The released SEED-X artefacts (SEEDX.md §10.1): how each is recognised, which config and mapping
table it converts with, and where a release tree keeps it."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax.numpy as jnp

from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.params import AGENT_RULES, agent_source
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.detokenizer.params import DETOKENIZER_RULES, detokenizer_source
from seedx_jax.diffusion.schedulers import NoiseScheduleConfig
from seedx_jax.llama import LlamaConfig
from seedx_jax.llama.params import LLAMA_HF_RULES, is_lora
from seedx_jax.lora import LoraConfig
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
    if found not in wanted:
        hint = f" (convert it with `seedx-jax convert {_COMMANDS[found]}`)" if found in _COMMANDS else ""
        raise ArtefactError(f"{name} holds a {found} checkpoint, not {what}{hint}")
    return found


def resolve_config(cls, spec: str | None, default: str):
    """`spec`: a preset name or a JSON file of fields (optionally naming a `preset`); None: `default`."""
    if spec is None:
        return cls.preset(default)
    if spec.endswith(".json"):
        with open(spec) as f:
            return cls.from_dict(json.load(f))
    return cls.preset(spec)


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


def _llama_config_from(folder: str | None, base: LlamaConfig | None = None) -> LlamaConfig | None:
    """The architecture in `folder/config.json`; the other fields (scan, remat, dtypes, ...) from `base`."""
    file = folder and os.path.join(folder, "config.json")
    if not file or not os.path.isfile(file):
        return None
    with open(file) as f:
        found = LlamaConfig.from_hf_dict(json.load(f))
    if base is None:
        return found
    fields = {f.name for f in dataclasses.fields(LlamaConfig)} & set(found.to_hf_dict())
    return base.replace(**{name: getattr(found, name) for name in fields})


def vit_artefact(path: str, *, config: str | None = None, dtype: str | None = None) -> Artefact:
    """`qwen_vit_G.pt`, or a Qwen-VL-Chat checkpoint (file or folder): its `transformer.visual.*` keys."""
    source = open_tensors(path)
    if expect(source, ("vit", "qwen_vl_chat"), "a Qwen-VL ViT", path) == "qwen_vl_chat":
        source = Renamed(source, strip=QWEN_VL_CHAT_PREFIX)
    cfg = with_param_dtype(resolve_config(VisionConfig, config, "qwen_vit_g_448"), dtype)
    return Artefact("vit", cfg, source, vit_rules(cfg.heads), options={"config": config, "dtype": dtype})


def llama_artefact(folder: str, *, dtype: str | None = None, merge_lora: bool = False,
                   lora_alpha: float | None = None) -> Artefact:
    """A Hugging Face Llama folder (config.json + safetensors / bin, sharded or not)."""
    source = open_tensors(folder)
    expect(source, ("llama",), "a Llama model", folder)
    cfg = _llama_config_from(folder)
    if cfg is None:
        raise ArtefactError(f"{folder}: no config.json (a Hugging Face Llama folder has one)")
    source, cfg, merged = _with_lora(source, cfg, merge_lora, lora_alpha)
    options = {"dtype": dtype, "merge_lora": merge_lora, "lora_alpha": lora_alpha}
    return Artefact("llama", with_param_dtype(cfg, dtype), source, LLAMA_HF_RULES,
                    allow_missing=_fresh_lora(cfg), options=options, merged=merged)


def agent_artefact(checkpoint: str, llm: str | None = None, *, config: str | None = None, dtype: str | None = None,
                   merge_lora: bool = False, lora_alpha: float | None = None) -> Artefact:
    """The agent file (release form: resamplers + patch_pos_embed; training / zero-to-fp32 form: also
    peft `llm.base_model.model.*` keys) over the `llm/` folder."""
    agent = open_tensors(checkpoint)
    expect(agent, ("agent",), "a SEED-X agent", checkpoint)
    base = None
    if llm is not None:
        base = open_tensors(llm)
        expect(base, ("llama",), "a Llama model", llm)
    cfg = resolve_config(AgentConfig, config, "seed_x")
    llm_cfg = _llama_config_from(llm, cfg.llm)
    source, llm_cfg, merged = _with_lora(agent_source(agent, base), llm_cfg or cfg.llm, merge_lora, lora_alpha)
    cfg = with_param_dtype(cfg.replace(llm=llm_cfg), dtype)
    options = {"config": config, "dtype": dtype, "merge_lora": merge_lora, "lora_alpha": lora_alpha}
    return Artefact("agent", cfg, source, AGENT_RULES, allow_missing=_fresh_lora(cfg.llm), options=options,
                    merged=merged)


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
    """A de-tokenizer stage file over a diffusers SDXL folder (`unet/`, `vae/`); the stage follows the
    checkpoint's `unet.conv_in.weight` (8 input channels: stage 2)."""
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
    cfg = resolve_config(DetokenizerConfig, config, "stage1")
    if "unet.conv_in.weight" in stage_file.keys():
        channels = stage_file.shape("unet.conv_in.weight")[1]
        cfg = cfg.replace(unet=cfg.unet.replace(in_channels=channels))
    options = {"config": config, "dtype": dtype, "stage": 2 if cfg.edits else 1,
               "scheduler": _scheduler_fields(sdxl)}
    return Artefact("detokenizer", with_param_dtype(cfg, dtype), detokenizer_source(stage_file, unet, vae),
                    DETOKENIZER_RULES, options=options)


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
    """Recognise the SEED-X release layout under `root` (SEEDX.md §10.1)."""
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
        raise ArtefactError(f"{root} is not a SEED-X release tree: no {', no '.join(missing)}")
    if len(tokenizers) > 1:
        raise ArtefactError(f"{root}: several tokenizer folders {tokenizers}")
    return Release(vit, os.path.join(root, tokenizers[0]), models, sdxl if os.path.isdir(sdxl) else None, detokenizers)

