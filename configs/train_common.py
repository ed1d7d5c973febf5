"""Shared pieces of the training configs (configs/detok_stage1.py ... sft_edit.py).

`micro_batch` is GLOBAL (all processes and devices); SEED-X's per-GPU sizes are given x 8 GPUs.
Every config also has a `:tiny` variant (`--config sft_edit:tiny`): the tiny models of the tests,
small images and short sequences, for CPU smoke runs.

The model configs (`model.vit`, `model.agent`, `model.detokenizer`, `model.lora`) hold every field
of their dataclass, presets expanded (`tree`), so any of them can be overridden on the command line
(`--config.model.agent.llm.vocab_size=32330`); ml_collections can only override fields it holds.
"""
import dataclasses
import types
import typing

import ml_collections
from ml_collections.config_dict import placeholder

from seedx_jax.agent.config import AgentConfig
from seedx_jax.detokenizer.model import DetokenizerConfig
from seedx_jax.lora import LoraConfig
from seedx_jax.precision import Precision
from seedx_jax.train.optim import OptimConfig
from seedx_jax.vision import anyres
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS
from seedx_jax.vision.vit import VisionConfig

EDIT_GRIDS = anyres.EDIT_GRIDS  # 1x1: text-to-image and edit images
TINY_GRIDS = ("1x1", "1x2", "2x1")


def is_tiny(name: str, variant: str) -> bool:
    """Whether `configs/<name>.py:<variant>` asks for the tiny models.

    Raises:
      ValueError: the variant is neither "" (full size) nor "tiny".
    """
    if variant not in ("", "tiny"):
        raise ValueError(f"{name}:{variant}: unknown variant; use --config {name} (full size) or --config "
                         f"{name}:tiny")
    return variant == "tiny"


def tree(cfg) -> ml_collections.ConfigDict:
    """Every field of the model-config dataclass `cfg`, nested configs as nested ConfigDicts, typed as
    the dataclass declares them so that command-line overrides parse: floats stay floats (1 -> 1.0),
    tuples tuples, and an unset optional value is a placeholder of its type. An unset nested config
    is left out (the LLM's LoRA: `model.lora` configures it)."""
    hints = typing.get_type_hints(type(cfg))
    out = ml_collections.ConfigDict()
    for field in dataclasses.fields(cfg):
        value, kind = getattr(cfg, field.name), _value_type(hints[field.name])
        if dataclasses.is_dataclass(value):
            out[field.name] = tree(value)
        elif value is None and not dataclasses.is_dataclass(kind):
            out[field.name] = placeholder(kind)
        elif value is not None:
            out[field.name] = float(value) if kind is float else value
    return out


def _value_type(hint):
    """The type a field holds when set: `int | None` -> int, `tuple[int, ...]` -> tuple."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(t for t in typing.get_args(hint) if t is not type(None))
    return typing.get_origin(hint) or hint


def source(fmt: str, task: str, *, weight: float = 1.0, micro_batch: int, max_length: int = 0, paths: str = "",
           image_dir: str = "", data_dir: str = "", grids=COMPREHENSION_GRIDS, resolution: int = 1024,
           min_resolution: int = 0, min_aspect_ratio: float = 0.0,
           similarity_threshold: float = 0.0) -> ml_collections.ConfigDict:
    """One data source; `paths` is a comma-separated list of globs, or for `fmt="tfds"` of TFDS
    `NAME[/CONFIG][:VERSION]:SPLIT` specs (`coco_captions:train`) prepared in `data_dir` ("": TFDS's
    default, $TFDS_DATA_DIR or ~/tensorflow_datasets; docs/tfds.md)."""
    return ml_collections.ConfigDict(dict(
        format=fmt, task=task, paths=paths, image_dir=image_dir, data_dir=data_dir, weight=weight,
        micro_batch=micro_batch, max_length=max_length, max_views=max(int(g[0]) * int(g[2]) for g in grids) + 1,
        grids=tuple(grids), resolution=resolution, min_resolution=min_resolution, min_aspect_ratio=min_aspect_ratio,
        similarity_threshold=similarity_threshold))


def base(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = stage
    c.seed = 42
    c.model = ml_collections.ConfigDict()
    c.model.vit = tree(VisionConfig.preset("qwen_vit_tiny", output_dim=16, pool_heads=2) if tiny else
                       VisionConfig.preset("qwen_vit_g_448", dtype="bfloat16", remat="full"))
    c.init = ml_collections.ConfigDict()  # <part>: a converted checkpoint directory ("" = random init)
    c.init.vit = ""
    c.tokenizer = ""  # MLLM stages: a tokenizer directory (seedx-jax convert tokenizer)
    c.optim = OptimConfig().to_dict()
    # compute_dtype 'bfloat16': every part computes in bf16 over fp32 master weights (docs/precision.md)
    c.precision = Precision().to_dict()
    c.train = ml_collections.ConfigDict(dict(
        steps=20000, accumulation=2, log_every=10, checkpoint_every=1000, keep=3, keep_every=5000,
        # a run stops after max_nonfinite skipped (non-finite) steps in all, or max_consecutive_nonfinite
        # in a row (0: no limit), with a checkpoint
        max_nonfinite=100, max_consecutive_nonfinite=20,
        async_checkpoints=True, peak_tflops=0.0,  # 0: from the device kind
        sample_every=0, sample_steps=25, sample_count=4))  # de-tokenizer stages: PNG samples
    c.data = ml_collections.ConfigDict(dict(seed=42, workers=0 if tiny else 8))
    c.data.sources = ml_collections.ConfigDict()
    # axis sizes per slice (-1: the remaining devices), dcn_* across slices; num_devices 0 = all devices
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, dcn_data=1, dcn_fsdp=1, dcn_tensor=1,
                                            num_devices=0))
    c.sharding_rules = ml_collections.ConfigDict()  # logical axis -> mesh axes overrides
    if tiny:
        c.optim.update(learning_rate=1e-3, warmup_steps=2, total_steps=200)
        c.train.update(steps=50, log_every=5, checkpoint_every=25, keep_every=0, sample_steps=4, sample_count=2)
    return c


def mllm(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    """Pre-training / instruction tuning: LoRA r=32 alpha=32 on SEED-X's LLM (docs/training_recipe.md)."""
    c = base(stage, tiny)
    c.model.agent = tree(AgentConfig.preset("tiny" if tiny else "seed_x"))
    if not tiny:
        c.model.agent.llm.update(dtype="bfloat16", remat="dots_no_batch")
        c.model.agent.input_resampler.dtype = c.model.agent.output_resampler.dtype = "bfloat16"
    c.model.lora = tree(LoraConfig(rank=4 if tiny else 32, alpha=4.0 if tiny else 32.0, dropout=0.05,
                                   modules_to_save=("input_layernorm", "post_attention_layernorm", "norm"),
                                   train_embeddings=True))
    c.init.agent = ""
    return c


def detok(stage: str, tiny: bool) -> ml_collections.ConfigDict:
    c = base(stage, tiny)
    preset = {"detok_stage1": "stage1", "detok_stage2": "stage2"}[stage]
    c.model.detokenizer = tree(DetokenizerConfig.preset(f"tiny{'_edit' if stage == 'detok_stage2' else ''}"
                                                        if tiny else preset))
    if not tiny:
        c.model.detokenizer.unet.update(dtype="bfloat16", remat="full")
    c.init.detokenizer = ""  # stage 2 may start from a stage-1 checkpoint: conv_in is widened (as official)
    # stage 1: "attention_kv" (SEED-X, over pretrained SDXL) or "all" (a U-Net with no pretraining)
    c.train.unet_trainable = "attention_kv"
    c.detok_loss = ml_collections.ConfigDict(dict(cond_drop=0.1, image_drop=0.1))  # [UNKNOWN] CFG dropout
    return c
