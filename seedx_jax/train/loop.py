"""`train(config, workdir)`: the whole run - checks, model and data, resume, the jitted step per data
source, metrics, checkpoints, de-tokenizer samples, and a clean stop with a checkpoint on SIGTERM (TPU
preemption) or Ctrl-C.

Resume: the newest complete checkpoint in `<workdir>/checkpoints` gives the train state (parameters,
Adam moments, step counters, key), every data stream's Grain position, and the loop step. Everything
the step draws (dropout, noise, timesteps) comes from the key in the state and the data order from
the seed, so a resumed run continues exactly as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import time

import jax
import numpy as np
from flax import nnx

from seedx_jax import sharding
from seedx_jax.exits import error_line
from seedx_jax.numerics import NonFiniteError
from seedx_jax.train import workdir as run_dir
from seedx_jax.train.build import (TrainConfigError, build_data, build_trainee, check_batches, check_config,
                                   check_vocab, load_tokenizer, make_train_mesh, model_configs, optim_config,
                                   train_rules, trainee_init)
from seedx_jax.train.checkpoints import TrainCheckpoints
from seedx_jax.train.metrics import MetricsLog, Throughput, compiled_flops, peak_flops
from seedx_jax.train.optim import lr_factor, make_optimizer
from seedx_jax.train.samples import write_samples
from seedx_jax.train.stages import DETOK_STAGES, DetokLossConfig, detok_loss_fn, mllm_loss, trainable
from seedx_jax.train.step import batch_shardings, init_state, make_train_step, split_trainable, state_shardings
from seedx_jax.train.stop import StopSignal


@dataclasses.dataclass
class RunResult:
    status: str  # "done" | "preempted" (SIGTERM) | "interrupted" (Ctrl-C)
    step: int  # loop steps completed (checkpoint step)
    state: object  # TrainState
    rest: object  # the frozen variables
    graphdef: object
    history: list[dict]  # the logged scalars, one dict per logged step
    start: int  # the step this run resumed from (== step: no step ran, nothing saved)


def _global_batch(local: dict[str, np.ndarray], mesh, rules):
    """Per-process rows `[A, micro / P, ...]` -> global arrays `[A, micro, ...]` sharded on the batch axes."""
    p = jax.process_count()
    shapes = {k: jax.ShapeDtypeStruct((v.shape[0], v.shape[1] * p, *v.shape[2:]), v.dtype) for k, v in local.items()}
    shardings = batch_shardings(shapes, mesh, rules)
    return {k: jax.make_array_from_process_local_data(shardings[k], v, shapes[k].shape) for k, v in local.items()}, \
        shardings


# fields a step's batch carries for counting only (the losses mask padding through the labels)
COUNT_ONLY = ("attention_mask",)


def step_recipe(config):
    """(trainable-parameter filter, optimizer, loss function) of the config's stage."""
    lora = model_configs(config).get("agent")
    unet = config.train.get("unet_trainable", "attention_kv")  # de-tokenizer stages only
    tx = make_optimizer(optim_config(config))
    if config.stage in DETOK_STAGES:
        loss_fn = detok_loss_fn(DetokLossConfig(cond_drop=config.detok_loss.cond_drop,
                                                image_drop=config.detok_loss.image_drop))
    else:
        loss_fn = mllm_loss
    return trainable(config.stage, lora and lora.llm.lora, unet), tx, loss_fn


def _counts(local: dict[str, np.ndarray]) -> tuple[float, float]:
    """(real tokens, images) in this process's part of a step's batch."""
    tokens = float(local["attention_mask"].sum()) if "attention_mask" in local else 0.0
    if "cmp_valid" in local:
        images = float(local["cmp_valid"].sum() + local["gen_valid"].sum())
    else:
        images = float(local["target"].shape[0] * local["target"].shape[1])
    return tokens, images


def train(config, workdir: str, *, log_stream=None, stop: StopSignal | None = None) -> RunResult:
    """Run (or resume) the training of `config` in `workdir` (a path as typed or a gs:// URL).

    SIGTERM or Ctrl-C end the run after the current step with a checkpoint of it: status "preempted" /
    "interrupted" (nothing saved when no step ran yet). `stop`: the `StopSignal` of a caller that took the
    signals over already (default: taken over for the run, unless the caller installed handlers of its
    own). Progress lines (compiles, the resume, the metrics) go to `log_stream` (default stderr).

    Raises:
      TrainConfigError, WorkdirError, DataError: one line naming the setting, before anything compiles
        (a workdir whose checkpoint holds another model than `config` builds too).
      NonFiniteError: `config.train.max_consecutive_nonfinite` steps in a row, or `max_nonfinite` in all,
        or every step of this run had a non-finite loss or gradient (skipped); a checkpoint is saved first.
    """
    if stop is not None:
        return _train(config, workdir, log_stream, stop)
    with StopSignal() as own:
        return _train(config, workdir, log_stream, own)


@contextlib.contextmanager
def _reading(checkpoints: TrainCheckpoints, step: int, workdir: str):
    """Any failure to read checkpoint `step` (damaged, or written by another version) is one line."""
    try:
        yield
    except Exception as err:  # Orbax, TensorStore and Grain each raise their own kinds
        checkpoints.close()
        detail = error_line(err)
        detail = detail if len(detail) <= 200 else detail[:200] + "..."  # TensorStore appends its whole spec
        raise run_dir.WorkdirError(f"--workdir {workdir}: cannot restore checkpoint {checkpoints.directory}/{step} "
                                   f"({detail}); move that folder away to resume from the one before, or start "
                                   f"in a new --workdir") from err


def _check_resumable(checkpoints: TrainCheckpoints, step: int, abstract_state, workdir: str) -> None:
    """Refuse checkpoint `step` unless its stored state has the paths, shapes and dtypes of `abstract_state`
    (the state `config` builds).

    Raises:
      WorkdirError: naming the workdir, the first parameter that differs and the remedy.
    """
    with _reading(checkpoints, step, workdir):
        difference = checkpoints.difference(step, abstract_state)
    if difference:
        checkpoints.close()
        raise run_dir.WorkdirError(f"--workdir {workdir} holds a run of another model: {difference}; resume it "
                                   f"with the config it was started with, or use a new --workdir")


def _train(config, workdir: str, log_stream, stop: StopSignal) -> RunResult:
    check_config(config)
    run_dir.check_workdir(workdir, config)
    mesh = make_train_mesh(config.mesh)
    rules = train_rules(config)
    check_batches(config, mesh, rules)
    tokenizer = load_tokenizer(config)
    check_vocab(config, tokenizer)
    view_size = model_configs(config)["vit"].image_size
    mixture = build_data(config, tokenizer, view_size)
    optim_cfg = optim_config(config)
    main = jax.process_index() == 0
    if main:
        run_dir.mark_workdir(workdir, config.stage)
    metrics_log = MetricsLog(workdir, config.train.steps, stream=log_stream, enabled=main)
    precision = config.get("precision", {})
    if precision.get("compute_dtype", "float32") != "float32":
        metrics_log.say(f"compute in {precision['compute_dtype']} (config.precision), fp32 master weights")

    with jax.set_mesh(mesh), sharding.use_rules(rules):
        keep, tx, loss_fn = step_recipe(config)
        key = jax.random.PRNGKey(config.seed + 1)
        checkpoints = TrainCheckpoints(workdir, keep=config.train.keep, keep_every=config.train.keep_every,
                                       async_save=config.train.async_checkpoints)
        start = checkpoints.latest_step() or 0
        if start:  # before the (possibly long) model build and any compile
            _, shapes, _ = split_trainable(nnx.eval_shape(trainee_init(config)), keep)
            _check_resumable(checkpoints, start, jax.eval_shape(lambda p: init_state(p, tx, key), shapes), workdir)

        model = build_trainee(config, mesh, rules)
        graphdef, params, rest = split_trainable(model, keep)
        del model
        abstract = jax.eval_shape(lambda p: init_state(p, tx, key), params)
        state_sh, rest_sh = state_shardings(abstract, rest, tx, mesh, rules)
        state = jax.jit(lambda p: init_state(p, tx, key), out_shardings=state_sh)(params)
        del params
        if start:
            with _reading(checkpoints, start, workdir):
                state, record = checkpoints.restore(start, sharding.with_shardings(abstract, state_sh), mixture)
            if record.get("stage") != config.stage:
                raise TrainConfigError(f"{workdir} holds a {record.get('stage')} run; config.stage is {config.stage}")
            metrics_log.say(f"resumed from step {start} of {checkpoints.directory}")
        applied_at_start = int(state.step)

        compiled: dict[str, tuple] = {}
        history: list[dict] = []
        factor = lr_factor(optim_cfg)
        peak = peak_flops(jax.devices()[0], config.train.peak_tflops)
        throughput = Throughput()
        sample_batch = None
        status, step = "done", start

        def record_for(done: int) -> dict:
            return {"stage": config.stage, "step": done, "optimizer_steps": int(state.step),
                    "nonfinite_steps": int(state.nonfinite),
                    "sources": {n: dataclasses.asdict(s) for n, s in mixture.stats().items()}}

        def stop_nonfinite(done: int, what: str) -> None:
            """Save the state after loop step `done` (its parameters are the last finite step's: skipped
            steps change none) unless saved already, write out the metrics, then raise."""
            checkpoints.wait()
            if checkpoints.latest_step() != done:
                checkpoints.save(done, state, mixture, record_for(done))
                checkpoints.wait()
            metrics_log.close()  # the losses up to the stop are what to look at
            raise NonFiniteError(f"{what}: check the learning rate, the data and the tokenizer; checkpoint of the "
                                 f"last finite state saved in {checkpoints.directory}/{done}")

        limit = config.train.max_consecutive_nonfinite

        def check_streak(at: int, streak: jax.Array, done: int) -> None:
            """Stop when the skips in a row after loop step `at` reached the limit (`done`: the newest step)."""
            if limit and int(streak) >= limit:
                stop_nonfinite(done, f"{int(streak)} consecutive steps had a non-finite loss or gradient (last at "
                                     f"step {at}; config.train.max_consecutive_nonfinite={limit})")

        previous = None  # (loop step, its streak): read once the next step is queued, so the device never waits

        for step in range(start, config.train.steps):
            if step == start and (reason := stop.agreed(step, 1)):
                status = reason  # a signal while the run was set up: no step ran, nothing new to save
                break
            name, local = mixture.batch_for(step)
            tokens, images = _counts(local)
            batch, batch_sh = _global_batch({k: v for k, v in local.items() if k not in COUNT_ONLY}, mesh, rules)
            if sample_batch is None and config.stage in DETOK_STAGES:
                sample_batch = {k: v[0, :config.train.sample_count] for k, v in local.items()}
            if name not in compiled:
                fn = make_train_step(graphdef, loss_fn, tx, shardings=(state_sh, rest_sh), batch_sharding=batch_sh)
                t0 = time.perf_counter()
                exe = fn.lower(state, rest, batch).compile()
                metrics_log.say(f"compiled the {config.stage} step for source {name} in "
                                f"{time.perf_counter() - t0:.1f} s")
                compiled[name] = (exe, compiled_flops(exe))
                throughput.restart()
            exe, flops = compiled[name]
            state, metrics = exe(state, rest, batch)
            done = step + 1
            if previous is not None:
                check_streak(*previous, done)
            previous = (done, metrics["nonfinite_streak"])
            throughput.add(tokens * jax.process_count(), images * jax.process_count())
            if done % config.train.log_every == 0 or done == config.train.steps:
                values = {k: float(v) for k, v in jax.device_get(metrics).items()}
                scalars = {f"loss/{k}" if "loss" in k else f"train/{k}": v for k, v in values.items()}
                scalars.update({
                    "train/lr": optim_cfg.learning_rate * float(factor(int(state.step) - values["finite"])),
                    "train/nonfinite_steps": float(state.nonfinite),
                    "train/skipped_samples": float(sum(s.skipped for s in mixture.stats().values())),
                    **throughput.report(flops, peak)})
                metrics_log.log(done, scalars)
                history.append({"step": done, **scalars})
                if int(state.nonfinite) > config.train.max_nonfinite:
                    stop_nonfinite(done, f"{int(state.nonfinite)} steps had a non-finite loss or gradient (> "
                                         f"config.train.max_nonfinite={config.train.max_nonfinite}; stopped at "
                                         f"step {done})")
            if sample_batch is not None and config.train.sample_every and done % config.train.sample_every == 0:
                path = os.path.join(workdir, "samples", f"step_{done:07d}.png")
                write_samples(path, nnx.merge(graphdef, state.params, rest), sample_batch,
                              num_steps=config.train.sample_steps, seed=config.seed)
            reason = stop.agreed(done, config.train.log_every)
            if done % config.train.checkpoint_every == 0 or done == config.train.steps or reason:
                checkpoints.save(done, state, mixture, record_for(done))
            if reason:
                status, step = reason, done
                break
            step = done
        if previous is not None:
            check_streak(*previous, step)
        if status == "done" and step > start and int(state.step) == applied_at_start:
            stop_nonfinite(step, f"all {step - start} steps of this run had a non-finite loss or gradient")
        checkpoints.wait()
        checkpoints.close()
    metrics_log.close()
    return RunResult(status, step, state, rest, graphdef, history, start)
