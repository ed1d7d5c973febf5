"""`python -m seedx_jax.preflight --config CONFIG [--config.x=y ...]`: run it on the target
(every host of a pod, with the same flags as the training command) before a long run. CONFIG is a
config file or a shipped config's name, as for `python -m seedx_jax.train`.

It prints the devices per host and in all, the mesh the run will build, each data source's global,
per-process and per-device batch, and a per-device memory estimate of one AOT-compiled train step per
source: trainable parameters + optimizer state + frozen parameters + batch, and XLA's temporary buffers
(activations, gradients, workspace) from `compiled.memory_analysis()`. The model, the state and the
batch stay abstract (`jax.eval_shape`): nothing is allocated, so a 13B configuration can be checked
from a CPU host too (`--device_memory_gib` then gives the memory to check against).

It fails (exit 2, one `preflight: error:` line, then advice) when the launch environment names more
processes than JAX runs (jax.distributed not initialised), a batch does not divide the mesh or the
processes, an estimate exceeds the device memory, or (unless `--nocheck_files`) the tokenizer, a data
glob or an init checkpoint is missing.
"""
from __future__ import annotations

import dataclasses
import glob
import math
import os
import sys
import time
from typing import Iterator

import jax
import numpy as np
from flax import nnx

from seedx_jax import sharding
from seedx_jax.data.examples import example_shapes
from seedx_jax.paths import resolve
from seedx_jax.train.build import (TrainConfigError, batch_axes_size, check_batches, check_config, check_vocab,
                                   example_specs, load_tokenizer, make_train_mesh, model_configs, trainee_init)
from seedx_jax.train.loop import COUNT_ONLY, step_recipe
from seedx_jax.train.stages import DETOK_STAGES
from seedx_jax.train.step import batch_shardings, init_state, make_train_step, split_trainable, state_shardings

GIB = 1024 ** 3


class PreflightError(TrainConfigError):
    """A run that would fail; `advice` says what to change."""

    def __init__(self, message: str, advice: str = ""):
        super().__init__(message)
        self.advice = advice


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per device of one train step."""

    params: int  # trainable parameters
    optimizer: int  # their optimizer state (Adam moments)
    frozen: int  # the ViT, VAE, frozen LLM weights
    batch: int
    temp: int  # XLA's temporaries: activations kept for the backward pass, gradients, workspace
    total: int  # arguments + outputs - donated aliases + temporaries, as XLA counts them

    def line(self) -> str:
        unit, scale = ("GiB", GIB) if self.total >= GIB else ("MiB", 1024 ** 2)
        parts = ", ".join(f"{name} {getattr(self, name) / scale:.2f}" for name in
                          ("params", "optimizer", "frozen", "batch", "temp"))
        return f"{self.total / scale:.2f} {unit} per device ({parts})"


@dataclasses.dataclass(frozen=True)
class SourcePlan:
    name: str
    task: str
    micro_batch: int  # global rows per micro-batch
    per_process: int
    per_device: int
    memory: MemoryEstimate
    compile_s: float


@dataclasses.dataclass(frozen=True)
class Report:
    devices: list[str]  # lines describing the devices
    mesh: dict[str, int]
    batch_ways: int  # how many ways a batch is split
    sources: list[SourcePlan]
    device_memory: int | None  # bytes per device the estimate is checked against


def describe_devices(max_hosts: int = 8) -> list[str]:
    """The global device count and kinds, then each process's (host's) devices, as every process sees them."""
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    lines = [f"devices: {len(devices)} in all ({', '.join(kinds)}; platform {jax.default_backend()}) over "
             f"{jax.process_count()} process(es)"]
    by_process: dict[int, list[int]] = {}
    for d in devices:
        by_process.setdefault(d.process_index, []).append(d.id)
    for index, ids in sorted(by_process.items())[:max_hosts]:
        this = " (this process)" if index == jax.process_index() else ""
        lines.append(f"  process {index}{this}: {len(ids)} devices, ids {min(ids)}..{max(ids)}")
    if len(by_process) > max_hosts:
        lines.append(f"  ... {len(by_process) - max_hosts} more processes")
    slices = {getattr(d, "slice_index", 0) for d in devices}
    if len(slices) > 1:
        lines.append(f"  {len(slices)} slices (config.mesh.dcn_* sizes the mesh across them)")
    return lines


def expected_processes() -> tuple[int, str] | None:
    """(processes, which setting says so) from the launch environment: the JAX variables, a SLURM task,
    GKE's TPU worker list; None when nothing says."""
    if os.environ.get("JAX_NUM_PROCESSES"):
        return int(os.environ["JAX_NUM_PROCESSES"]), "JAX_NUM_PROCESSES"
    if os.environ.get("SLURM_PROCID") and os.environ.get("SLURM_NTASKS"):
        return int(os.environ["SLURM_NTASKS"]), "SLURM_NTASKS"
    for name in ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES"):
        if os.environ.get(name):
            return len(os.environ[name].split(",")), name
    return None


def check_processes() -> None:
    """A host that should be one of several but runs alone would train its own copy on its own chips
    (or hang at the first collective): the anchors' most reported multi-host start-up failure."""
    expected = expected_processes()
    if expected and expected[0] != jax.process_count():
        raise PreflightError(f"{expected[1]} says {expected[0]} processes but JAX runs {jax.process_count()}: "
                             "jax.distributed is not initialised on every host",
                             "pass --distributed=on (the launchers in launch/ do), or --coordinator, "
                             "--num_processes and --process_id, on every host")


def device_memory_bytes(override_gib: float = 0.0) -> int | None:
    """The memory one device has for arrays: `override_gib`, else what the runtime reports (TPU, GPU);
    None on CPU, which reports nothing."""
    if override_gib:
        return int(override_gib * GIB)
    stats = jax.local_devices()[0].memory_stats() or {}
    return stats.get("bytes_limit")


def file_problems(config) -> list[str]:
    """What the run would stop on at start-up: tokenizer, data globs, init checkpoints (on this host)."""
    problems = []
    if config.stage not in DETOK_STAGES and not (config.tokenizer.strip() and os.path.isdir(resolve(config.tokenizer))):
        problems.append(f"config.tokenizer={config.tokenizer!r} is not a directory")
    for name, src in config.data.sources.items():
        patterns = [p.strip() for p in src.paths.split(",") if p.strip()]
        if not any(glob.glob(resolve(p)) for p in patterns):
            problems.append(f"config.data.sources.{name}.paths={src.paths!r} matches no files")
    for part, path in config.init.items():
        if path.strip() and not os.path.isfile(os.path.join(resolve(path), "manifest.json")):
            problems.append(f"config.init.{part}={path!r} is not a converted checkpoint (no manifest.json)")
    return problems


def _shard_bytes(abstract, shardings) -> int:
    """Bytes one device holds of arrays `abstract` laid out by `shardings` (same tree)."""
    total = 0
    for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
        total += math.prod(s.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
    return total


def estimate_memory(config, mesh, rules, *, say=None) -> Iterator[SourcePlan]:
    """AOT-compile the train step of each source on abstract inputs and read XLA's memory analysis."""
    view_size = model_configs(config)["vit"].image_size
    specs = example_specs(config, view_size)
    accumulation = config.train.accumulation
    ways = batch_axes_size(mesh, rules)
    with jax.set_mesh(mesh), sharding.use_rules(rules):
        keep, tx, loss_fn = step_recipe(config)
        graphdef, params, rest = split_trainable(nnx.eval_shape(trainee_init(config)), keep)
        state = jax.eval_shape(lambda p: init_state(p, tx, jax.random.PRNGKey(0)), params)
        state_sh, rest_sh = state_shardings(state, rest, tx, mesh, rules)
        param_bytes = _shard_bytes(state.params, state_sh.params)
        opt_bytes = _shard_bytes(state.opt_state, state_sh.opt_state)
        frozen_bytes = _shard_bytes(rest, rest_sh)
        state, rest = sharding.with_shardings(state, state_sh), sharding.with_shardings(rest, rest_sh)
        for name, spec in specs.items():
            micro = config.data.sources[name].micro_batch
            batch = {k: jax.ShapeDtypeStruct((accumulation, micro, *shape), dtype)
                     for k, (shape, dtype) in example_shapes(spec).items() if k not in COUNT_ONLY}
            batch_sh = batch_shardings(batch, mesh, rules)
            if say:
                say(f"compiling the {config.stage} step for source {name} (abstract inputs) ...")
            t0 = time.perf_counter()
            step = make_train_step(graphdef, loss_fn, tx, shardings=(state_sh, rest_sh), batch_sharding=batch_sh)
            analysis = step.lower(state, rest, sharding.with_shardings(batch, batch_sh)).compile().memory_analysis()
            seconds = time.perf_counter() - t0
            total = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
                     + analysis.temp_size_in_bytes)
            memory = MemoryEstimate(param_bytes, opt_bytes, frozen_bytes, _shard_bytes(batch, batch_sh),
                                    analysis.temp_size_in_bytes, total)
            yield SourcePlan(name, spec.task, micro, micro // jax.process_count(), micro // ways, memory, seconds)


def _memory_advice(plan: SourcePlan, limit: int, mesh) -> str:
    """What to change, the larger part of the estimate first."""
    memory = plan.memory
    state = memory.params + memory.optimizer + memory.frozen
    activations = (f"- activations and temporaries ({memory.temp / GIB:.1f} GiB): lower "
                   f"config.data.sources.{plan.name}.micro_batch (now {plan.per_device} rows per device) and raise "
                   "config.train.accumulation by the same factor (same global batch); remat='full' on model.vit, "
                   "model.agent.llm or model.detokenizer.unet")
    devices = mesh.devices.size
    if mesh.shape["fsdp"] < devices:
        weights = (f"- parameters and optimizer state ({state / GIB:.1f} GiB): shard them over every device with "
                   f"config.mesh.fsdp=-1 and config.mesh.data=1 (now fsdp={mesh.shape['fsdp']} of {devices})")
    else:
        weights = (f"- parameters and optimizer state ({state / GIB:.1f} GiB) are sharded over all {devices} devices "
                   "already: more devices, or bfloat16 frozen weights (model.vit.param_dtype='bfloat16')")
    order = [activations, weights] if memory.temp >= state else [weights, activations]
    return "\n".join([f"the estimate is {memory.total / limit:.0%} of the {limit / GIB:.1f} GiB a device has; "
                       "to fit:", *order])


def preflight(config, *, device_memory_gib: float = 0.0, check_files: bool = True, say=print) -> Report:
    """Every check, then the memory estimate, printing through `say` as it goes; raises PreflightError
    (or TrainConfigError) on a problem."""
    check_config(config)
    devices = describe_devices()
    for line in devices:
        say(line)
    check_processes()
    mesh = make_train_mesh(config.mesh)
    rules = sharding.rules_with_overrides(dict(config.sharding_rules))
    ways = batch_axes_size(mesh, rules)
    say(f"mesh: {' '.join(f'{k}={v}' for k, v in mesh.shape.items())}; a batch is split {ways} ways")
    check_batches(config, mesh, rules)
    if check_files:
        problems = file_problems(config)
        if problems:
            raise PreflightError(problems[0], "\n".join(problems[1:] + [
                "(--nocheck_files skips these checks, e.g. for a sizing run away from the data)"]))
        check_vocab(config, load_tokenizer(config))  # a tokenizer larger than the LLM: NaN from step 1
    limit = device_memory_bytes(device_memory_gib)
    sources = []
    for plan in estimate_memory(config, mesh, rules, say=say):
        say(f"source {plan.name} ({plan.task}): micro-batch {plan.micro_batch} = {plan.per_process} rows per process "
            f"= {plan.per_device} per device; step compiled in {plan.compile_s:.1f} s")
        say(f"  memory: {plan.memory.line()}")
        if limit and plan.memory.total > limit:
            raise PreflightError(f"source {plan.name}: the step needs about {plan.memory.line()}, more than the "
                                 f"{limit / GIB:.1f} GiB a device has", _memory_advice(plan, limit, mesh))
        sources.append(plan)
    say(f"device memory: {limit / GIB:.1f} GiB, every estimate fits" if limit else
        "device memory: not reported on this platform; --device_memory_gib=N checks against N GiB")
    return Report(devices, dict(mesh.shape), ways, sources, limit)


def main(argv) -> int:
    from absl import flags

    from seedx_jax.train import distributed

    del argv
    values = flags.FLAGS
    distributed.initialize(values)
    main_process = jax.process_index() == 0

    def say(text):
        if main_process:
            print(text, flush=True)

    try:
        preflight(values.config, device_memory_gib=values.device_memory_gib, check_files=values.check_files, say=say)
    except TrainConfigError as err:
        print(f"preflight: error: {err}", file=sys.stderr)
        if getattr(err, "advice", ""):
            print(err.advice, file=sys.stderr)
        return 2
    say("preflight: OK")
    return 0


if __name__ == "__main__":
    from absl import app, flags
    from absl import logging as absl_logging
    from ml_collections import config_flags

    from seedx_jax.train import distributed
    from seedx_jax.train.config_files import parse_flags

    config_flags.DEFINE_config_file("config", None, "the run's config file, or a shipped config's name "
                                    "(sft_edit:tiny)", lock_config=True)
    flags.DEFINE_float("device_memory_gib", 0.0, "check against this much memory per device (default: what "
                       "the device reports; CPU reports nothing)")
    flags.DEFINE_bool("check_files", True, "check that the tokenizer, data globs and init checkpoints exist here")
    distributed.define_flags()
    flags.mark_flags_as_required(["config"])
    absl_logging.set_verbosity(absl_logging.WARNING)
    app.run(main, flags_parser=parse_flags("preflight"))
