"""Stopping and resuming a run: Ctrl-C stops it as SIGTERM does, after the current step with a checkpoint
(never as an exception inside an XLA compile or a device transfer) and a second Ctrl-C at once; a
workdir whose checkpoint holds another model, or one that cannot be read, is one line before the model
is built; the compile and resume lines are progress lines, not warnings."""
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

import seedx_jax.train.loop as loop
import train_fixtures as F
from processes import interruptible
from seedx_jax.train.stop import STOPPED_AT_ONCE, StopSignal
from seedx_jax.train.workdir import WorkdirError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.write_all(str(tmp_path_factory.mktemp("train_data")))


def tiny(data, **train):
    return F.tiny_config("sft_edit", data, log_every=1, checkpoint_every=1000, sample_every=0, accumulation=1, **train)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """(workdir, result, progress lines, seedx_jax log records at WARNING and up) of a run sent Ctrl-C as
    its step finished compiling, with Python's default signal handlers (the tests after it reuse its
    workdir and its log: one compile)."""
    work, stream, records = tmp_path_factory.mktemp("interrupted") / "run", io.StringIO(), Records()
    flops = loop.compiled_flops

    def interrupt_then_count(compiled):
        signal.raise_signal(signal.SIGINT)
        return flops(compiled)

    previous = {sig: signal.signal(sig, default) for sig, default in StopSignal.DEFAULTS.items()}
    logging.getLogger().addHandler(records)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(loop, "compiled_flops", interrupt_then_count)
            result = loop.train(tiny(data, steps=50), str(work), log_stream=stream)
        assert {sig: signal.getsignal(sig) for sig in previous} == StopSignal.DEFAULTS  # given back
    except KeyboardInterrupt:  # not through pytest, which would end the session
        pytest.fail("Ctrl-C raised an exception inside the run")
    finally:
        logging.getLogger().removeHandler(records)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    warnings = [r.getMessage() for r in records.records
                if r.name.startswith("seedx_jax") and r.levelno >= logging.WARNING]
    return work, result, stream.getvalue().splitlines(), warnings


def test_ctrl_c_while_compiling_stops_after_the_step_with_a_checkpoint(interrupted):
    work, result, _, _ = interrupted
    assert (result.status, result.step, result.start) == ("interrupted", 1, 0)
    assert os.listdir(work / "checkpoints") == ["1"]


def test_progress_lines_are_not_warnings(interrupted):
    _, _, lines, warnings = interrupted
    assert warnings == []
    assert lines[0].startswith("compiled the sft_edit step for source edit in ") and lines[0].endswith(" s")
    assert lines[1].startswith("[                    ] step 1/50  ")


def test_a_workdir_of_another_model_is_refused_before_the_model_is_built(data, interrupted, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was built or a step compiled")

    monkeypatch.setattr(loop, "build_trainee", never)
    monkeypatch.setattr(loop, "make_train_step", never)
    work = tmp_path / "run"
    shutil.copytree(interrupted[0], work)
    config = tiny(data, steps=4)
    config.model.agent.llm.num_hidden_layers = 3
    with pytest.raises(WorkdirError) as caught:
        loop.train(config, str(work), log_stream=io.StringIO())
    assert str(caught.value) == (
        f"--workdir {work} holds a run of another model: parameter agent/llm/layers/input_layernorm/scale has (2, 64) "
        "float32 in checkpoint 1, (3, 64) float32 in this config; resume it with the config it was started with, or "
        "use a new --workdir")

    (work / "checkpoints" / "1" / "state" / "_METADATA").unlink()
    with pytest.raises(WorkdirError, match=rf"^--workdir {work}: cannot restore checkpoint {work}/checkpoints/1 \(.*"
                                           r"_METADATA.*\); move that folder away to resume from the one before, or "
                                           r"start in a new --workdir$"):
        loop.train(tiny(data, steps=4), str(work), log_stream=io.StringIO())


def test_a_second_ctrl_c_stops_at_once_while_the_main_thread_is_busy():
    """The main thread in a long call that signals do not end (an XLA compile; here a sleep): the first
    Ctrl-C only sets the flag, the second exits. One interrupt delivered twice at once (`timeout -s INT`
    signals the command, then its process group) is one Ctrl-C."""
    script = ("import time\nfrom seedx_jax.train.stop import StopSignal\n"
              "with StopSignal(exit_on_second_interrupt=True):\n"
              "    print('ready', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=interruptible)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=10)[1]
    finally:
        proc.kill()
    assert (proc.returncode, err.splitlines()) == (130, [STOPPED_AT_ONCE.decode().strip()])


def test_cli_ctrl_c_saves_the_step_and_exits_130(data, tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seedx_jax.train", "--config", "sft_edit:tiny", "--workdir", str(work),
         f"--config.tokenizer={data['tokenizer']}", f"--config.data.sources.edit.paths={data['edit']}",
         f"--config.data.sources.edit.image_dir={data['image_dir']}", "--config.mesh.num_devices=1",
         "--config.train.steps=10000", "--config.train.log_every=1", "--config.train.checkpoint_every=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, JAX_PLATFORMS="cpu"),
        preexec_fn=interruptible)
    metrics = work / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no steps after 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=120)[1]
    finally:
        proc.kill()
    step = len(metrics.read_text().splitlines())  # every step is logged, the one it stopped after too
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert err.splitlines()[-1] == (f"seedx_jax.train: interrupted (Ctrl-C) at step {step}; checkpoint saved in "
                                    f"{work}/checkpoints; rerun the same command to resume")
    assert os.listdir(work / "checkpoints") == [str(step)]
