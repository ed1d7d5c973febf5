"""From a training ConfigDict to the pieces of a run: checked settings, the mesh, the model to train
(initialised straight into its shardings, then loaded from converted checkpoints), and the data mixture.

Every check here runs before anything is compiled, and fails with one line naming the setting.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import re
from typing import Mapping

import jax
import ml_collections
from flax import nnx

from seedx_jax import sharding
from seedx_jax.agent.config import AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import load_model
from seedx_jax.data.examples import ExampleBuilder, ExampleSpec
from seedx_jax.data.formats import TASK_KINDS, open_source
from seedx_jax.data.pipeline import ExampleStream, Mixture, SourceSpec
from seedx_jax.data.sequences import PromptLists
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.llama import LlamaConfig
from seedx_jax.lora import LoraConfig
from seedx_jax.paths import resolve
from seedx_jax.precision import Precision
from seedx_jax.train.optim import OptimConfig
from seedx_jax.train.stages import DETOK_STAGES, STAGE_TASKS, STAGES, UNET_TRAINABLE, DetokTrainee, MLLMTrainee
from seedx_jax.vision.vit import QwenViT, VisionConfig


class TrainConfigError(ValueError):
    """A training setting that cannot work; the message names it."""


def _dict(node) -> dict:
    return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else dict(node)


def check_config(config) -> None:
    """Every setting that needs no file or device: the stage, the sources, the train counts, the
    optimizer and model configs, the sharding rule overrides.

    Raises:
      TrainConfigError: one line naming the setting by its full path (`config.model.agent.llm.remat`).
    """
    if config.stage not in STAGES:
        raise TrainConfigError(f"config.stage={config.stage!r} is not one of {STAGES}")
    if not config.data.sources:
        raise TrainConfigError("config.data.sources is empty")
    for name, src in config.data.sources.items():
        if src.task not in STAGE_TASKS[config.stage]:
            raise TrainConfigError(f"config.data.sources.{name}.task={src.task!r}: stage {config.stage} trains on "
                                   f"{STAGE_TASKS[config.stage]}")
        if src.micro_batch <= 0:
            raise TrainConfigError(f"config.data.sources.{name}.micro_batch={src.micro_batch} must be positive")
    unet = config.train.get("unet_trainable", "attention_kv")
    if unet not in UNET_TRAINABLE:
        raise TrainConfigError(f"config.train.unet_trainable={unet!r} is not one of {UNET_TRAINABLE}")
    for field in ("steps", "accumulation"):
        if config.train[field] <= 0:
            raise TrainConfigError(f"config.train.{field}={config.train[field]} must be positive")
    optim_config(config)
    model_configs(config)
    train_rules(config)


def optim_config(config) -> OptimConfig:
    return _configured(OptimConfig(), _dict(config.optim), "config.optim")


def train_rules(config) -> sharding.Rules:
    """The sharding rules table with `config.sharding_rules` over the defaults."""
    try:
        return sharding.rules_with_overrides(_dict(config.sharding_rules))
    except ValueError as err:
        raise TrainConfigError(f"config.sharding_rules: {err}") from None


def make_train_mesh(mesh_config):
    """The (data, fsdp, tensor) mesh over all devices, or the first `num_devices` (single process only)."""
    sizes = {k: v for k, v in dict(mesh_config).items() if k != "num_devices"}
    n = mesh_config.get("num_devices", 0)
    devices = jax.devices()
    if n:
        if jax.process_count() > 1 and n != len(devices):
            raise TrainConfigError(f"config.mesh.num_devices={n}: a multi-process run uses all {len(devices)} devices")
        if n > len(devices):
            raise TrainConfigError(f"config.mesh.num_devices={n} but only {len(devices)} devices exist")
        devices = devices[:n]
    try:
        return sharding.make_mesh(sizes, devices)
    except ValueError as err:  # sharding names the sizes `mesh.<axis>`
        raise TrainConfigError(f"config.{err}" if str(err).startswith("mesh") else f"config.mesh: {err}") from None


def check_batches(config, mesh, rules) -> None:
    """Every source's global micro-batch must split evenly over the mesh's batch axes and the processes."""
    for name, src in config.data.sources.items():
        field = f"config.data.sources.{name}.micro_batch"
        try:
            sharding.check_batch_divisible(src.micro_batch, mesh, rules, field=field)
        except ValueError as err:
            raise TrainConfigError(f"{err}; {_multiples(src.micro_batch, batch_axes_size(mesh, rules))}") from None
        if src.micro_batch % jax.process_count():
            raise TrainConfigError(f"{field}={src.micro_batch} is not divisible by the {jax.process_count()} "
                                   f"processes; {_multiples(src.micro_batch, jax.process_count())}")


def batch_axes_size(mesh, rules) -> int:
    """How many ways the mesh splits a batch (the product of the `batch` logical axis's mesh axes)."""
    return sharding.logical_axis_size("batch", mesh, rules)


def _multiples(value: int, size: int) -> str:
    below = value // size * size
    options = " or ".join(str(v) for v in (below, below + size) if v > 0)
    return f"use a multiple of {size} (e.g. {options}) and adjust config.train.accumulation to keep the global batch"


def model_configs(config) -> dict:
    """{"vit": VisionConfig, and "agent": AgentConfig or "detokenizer": DetokenizerConfig}: each the
    fields of `config.model.<part>` over the defaults (or over a `preset` the part names).

    Raises:
      TrainConfigError: a part that cannot be built (a field it lacks, sizes that do not fit), naming
        the field by its full path.
    """
    m = config.model
    cfgs = {"vit": _from_overrides(VisionConfig, m.vit, "config.model.vit")}
    if config.stage in DETOK_STAGES:
        cfgs["detokenizer"] = detok = _from_overrides(DetokenizerConfig, m.detokenizer, "config.model.detokenizer")
        if config.stage == "detok_stage2" and not detok.edits:
            raise TrainConfigError(f"config.model.detokenizer.unet.in_channels={detok.unet.in_channels}: detok_stage2 "
                                   f"needs 2 x the {detok.unet.out_channels} latent channels (preset stage2 or "
                                   f"tiny_edit)")
    else:
        agent = _from_overrides(AgentConfig, m.agent, "config.model.agent")
        lora = _configured(LoraConfig(), _dict(m.lora), "config.model.lora")
        try:  # LlamaConfig checks the LoRA against the vocabulary
            cfgs["agent"] = agent.replace(llm=agent.llm.replace(lora=lora))
        except ValueError as err:
            raise TrainConfigError(_with_paths(str(err), [("config.model.agent.llm", LlamaConfig),
                                                          ("config.model.lora", LoraConfig)])) from None
        if agent.feature_dim != cfgs["vit"].output_dim:
            raise TrainConfigError(f"config.model.agent.input_resampler.kv_dim={agent.feature_dim} (the ViT features "
                                   f"the agent takes) != config.model.vit.output_dim={cfgs['vit'].output_dim}")
    precision = _configured(Precision(), _dict(config.get("precision", {})), "config.precision")
    try:
        precision.check_training()
        precision.check_device()
    except ValueError as err:
        raise TrainConfigError(str(err).replace("Precision.", "config.precision.")) from None
    if precision.compute_dtype != "float32":  # one switch for every part's compute dtype; weights stay fp32
        cfgs = {part: precision.configure(cfg) for part, cfg in cfgs.items()}
    return cfgs


def _from_overrides(cls, node, path: str):
    """`cls`'s preset named by `node.preset` (or its defaults) with the other fields of `node` over it."""
    fields = _dict(node)
    preset = fields.pop("preset", None)
    try:
        base = cls.preset(preset) if preset else cls()
    except ValueError as err:
        raise TrainConfigError(f"{path}.preset={preset!r}: {err}") from None
    return _configured(base, fields, path)


def _configured(base, overrides: Mapping, path: str):
    """`base` (a model or optimizer config dataclass at `path`) with `overrides`; a nested mapping
    overrides the nested config field by field. Each nested config is built on its own first, so an
    error is reported at the config that raised it.

    Raises:
      TrainConfigError: the config's error with its fields named by their full paths.
    """
    fields = {}
    for name, value in overrides.items():
        current = getattr(base, name, None)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
            value = _configured(current, value, f"{path}.{name}")
        fields[name] = tuple(value) if isinstance(value, list) else value  # LoraConfig takes no lists
    try:
        return base.override(fields) if hasattr(base, "override") else dataclasses.replace(base, **fields)
    except (ValueError, TypeError) as err:
        raise TrainConfigError(_with_paths(str(err), [(path, type(base))])) from None


# a field as the configs' errors name it: `width=`, `input_resampler.embed_dim=`, `block_out_channels has`
_FIELD = re.compile(r"(?<![\w.])([A-Za-z_]\w*)((?:\.\w+)*)(?==| has )")


def _with_paths(message: str, owners: list[tuple[str, type]]) -> str:
    """`message` of a config dataclass's check with each field it names (`LlamaConfig.remat=`, `remat=`,
    `input_resampler.kv_dim=`) written as its full path (`config.model.agent.llm.remat=`). `owners`:
    (path, dataclass) of each config the message may talk about; the one the message starts with, or
    the first, names the fields it does not prefix.
    """
    owners = [(path, {f.name for f in dataclasses.fields(cls)}, cls.__name__) for path, cls in owners]
    first = next((o for o in owners if re.match(rf"{o[2]}\b", message)), owners[0])
    path, fields, name = first
    body, sep = message, ": "
    if message.startswith(f"{name}."):
        body = message[len(name) + 1:]
        body = re.sub(r"^(\w+)", lambda m: f"{path}.{m[1]}" if m[1] in fields else m[1], body)
    elif message.startswith(f"{name}: "):
        body = message[len(name) + 2:]
    elif message.startswith(f"{name} "):
        body, sep = message[len(name) + 1:], " "

    def qualify(m):
        for where, names, _ in [first] + owners:
            if m[1] in names:
                return f"{where}.{m[1]}{m[2]}"
        return m[0]

    body = _FIELD.sub(qualify, body)
    return body if body.startswith(path) else f"{path}{sep}{body}"


def trainee_init(config):
    """A function building the stage's randomly initialised trainee (ViT + agent or de-tokenizer)."""
    cfgs = model_configs(config)
    seed = config.seed

    def init():
        rngs = nnx.Rngs(seed)
        vit = QwenViT(cfgs["vit"], rngs=rngs)
        if "agent" in cfgs:
            return MLLMTrainee(vit, SeedXAgent(cfgs["agent"], rngs=rngs))
        return DetokTrainee(vit, Detokenizer(cfgs["detokenizer"], rngs=rngs))
    return init


def build_trainee(config, mesh, rules) -> nnx.Module:
    """The ViT + agent or de-tokenizer, created sharded, then each part with a `config.init.<part>`
    directory (a converted checkpoint) is loaded over it (parameters the checkpoint lacks, e.g. fresh
    LoRA, keep their initial values)."""
    model = sharding.create_sharded(trainee_init(config), mesh, rules)
    for part, path in config.init.items():
        if not path:
            continue
        if not hasattr(model, part):
            raise TrainConfigError(f"config.init.{part}: stage {config.stage} has no {part}")
        loaded = nnx.state(load_model(path, part, mesh=mesh, rules=rules))
        target = dict(nnx.to_flat_state(nnx.state(getattr(model, part))))
        if config.stage == "detok_stage2" and part == "detokenizer":
            _widen_conv_in(loaded, target)
        for key, var in nnx.to_flat_state(loaded):
            want = target.get(key)
            if want is None or want[...].shape != var[...].shape:
                raise TrainConfigError(f"config.init.{part}={path}: {'/'.join(map(str, key))} has shape "
                                       f"{var[...].shape}, the configured model "
                                       f"{'has no such parameter' if want is None else want[...].shape}")
        nnx.update(getattr(model, part), loaded)
    return model


def _widen_conv_in(loaded: nnx.State, target: dict) -> None:
    """A stage-1 de-tokenizer as the start of stage 2 (as SEED-X's stage-2 adapter): its 4-channel `conv_in` kernel
    goes into input channels 0..3 of the 8-channel one, the latent-image channels start at zero."""
    key = ("unet", "conv_in", "kernel")
    old, new = dict(nnx.to_flat_state(loaded)).get(key), target[key]
    if old is None or old[...].shape == new[...].shape:
        return
    kernel = old[...]  # [3, 3, C_in, C_out]
    if kernel.shape[2] * 2 != new[...].shape[2]:
        return  # the shape check reports it
    widened = jax.numpy.concatenate([kernel, jax.numpy.zeros_like(kernel)], axis=2)
    old.set_value(jax.device_put(widened, new[...].sharding))


def _paths(name: str, pattern: str) -> list[str]:
    """The files of the comma-separated globs `pattern`, relative to the working directory (`~` expanded)."""
    paths = sorted(p for part in pattern.split(",") if part.strip() for p in glob.glob(resolve(part.strip())))
    if not paths:
        raise TrainConfigError(f"config.data.sources.{name}.paths={pattern!r} matches no files")
    return paths


def _source_paths(name: str, src) -> list[str]:
    """The files of the source's globs; for format "tfds", its comma-separated `NAME:SPLIT` specs as given."""
    if src.format != "tfds":
        return _paths(name, src.paths)
    specs = [spec.strip() for spec in src.paths.split(",") if spec.strip()]
    if not specs:
        raise TrainConfigError(f"config.data.sources.{name}.paths={src.paths!r} names no TFDS dataset (e.g. "
                               f"coco_captions:train)")
    return specs


def example_specs(config, view_size: int) -> dict[str, ExampleSpec]:
    """Each data source's example shapes and filters, by source name."""
    data = config.data
    prompts = PromptLists(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                             for k, v in _dict(data.prompts).items()}) if data.get("prompts") else PromptLists()
    return {name: ExampleSpec(task=src.task, max_length=src.max_length, view_size=view_size, max_views=src.max_views,
                              grids=tuple(src.grids), resolution=src.resolution, min_resolution=src.min_resolution,
                              min_aspect_ratio=src.min_aspect_ratio, similarity_threshold=src.similarity_threshold,
                              prompts=prompts)
            for name, src in data.sources.items()}


def build_data(config, tokenizer: SeedXTokenizer | None, view_size: int) -> Mixture:
    """One ExampleStream per source (this process's shard of the global order) and their mixture."""
    data = config.data
    streams, specs = [], []
    for (name, src), spec in zip(data.sources.items(), example_specs(config, view_size).values()):
        paths = _source_paths(name, src)
        try:  # data_dir: TFDS sources only; absent from configs saved before it existed
            reader = open_source(src.format, paths, src.image_dir, kind=TASK_KINDS[src.task],
                                 data_dir=src.get("data_dir", ""))
        except (FileNotFoundError, ValueError) as err:
            raise TrainConfigError(f"config.data.sources.{name}: {err}") from None
        streams.append(ExampleStream(name, reader, ExampleBuilder(spec, tokenizer), seed=data.seed,
                                     per_process=src.micro_batch // jax.process_count(),
                                     process_index=jax.process_index(), process_count=jax.process_count(),
                                     workers=data.workers))
        specs.append(SourceSpec(name, src.weight, src.micro_batch))
    return Mixture(streams, specs, seed=data.seed, accumulation=config.train.accumulation,
                   process_count=jax.process_count())


def load_tokenizer(config) -> SeedXTokenizer | None:
    if config.stage in DETOK_STAGES:
        return None
    if not config.tokenizer.strip() or not os.path.isdir(resolve(config.tokenizer)):
        raise TrainConfigError(f"config.tokenizer={config.tokenizer!r} is not a tokenizer directory "
                               "(seedx-jax convert tokenizer writes one)")
    return SeedXTokenizer.from_dir(resolve(config.tokenizer))


def check_vocab(config, tokenizer: SeedXTokenizer | None) -> None:
    """The tokenizer's ids must all be rows of the agent LLM's embedding: an id past it trains every step
    on NaN (every id the data builder writes, text and image tokens alike, comes from this tokenizer).

    Raises:
      TrainConfigError: naming both sizes and the tokenizer.
    """
    if tokenizer is None:
        return
    vocab = model_configs(config)["agent"].llm.vocab_size
    if tokenizer.vocab_size > vocab:
        raise TrainConfigError(f"config.tokenizer={config.tokenizer!r} has {tokenizer.vocab_size} tokens, more than "
                               f"the {vocab} rows of config.model.agent.llm.vocab_size: use the model's tokenizer "
                               f"or set vocab_size to at least {tokenizer.vocab_size}")
