"""A training run never ends "done" on NaN: a tokenizer with ids past the model's vocabulary is refused
before anything is built, consecutive non-finite steps stop the run with a checkpoint, and the CLI
exits 1 with one line for a diverged run."""
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import pytest

import seedx_jax.train.loop as loop
import train_fixtures as F
from seedx_jax.numerics import NonFiniteError
from seedx_jax.train.build import TrainConfigError
from processes import cpu_env


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.write_all(str(tmp_path_factory.mktemp("train_data")))


def tiny(data, **train):
    return F.tiny_config("sft_edit", data, log_every=1, checkpoint_every=1000, sample_every=0, accumulation=1, **train)


def test_tokenizer_past_the_vocab_is_refused_before_anything_is_built(data, tmp_path, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("the model was built or a step compiled")

    monkeypatch.setattr(loop, "build_trainee", never)
    monkeypatch.setattr(loop, "make_train_step", never)
    config = tiny(data, steps=2)
    config.model.agent.llm.vocab_size = 600  # the fixture tokenizer: 320 pieces + 330 SEED-X tokens
    with pytest.raises(TrainConfigError, match=rf"config\.tokenizer='{data['tokenizer']}' has 650 tokens, more than "
                                               r"the 600 rows of config\.model\.agent\.llm\.vocab_size"):
        loop.train(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    from seedx_jax.preflight import preflight

    with pytest.raises(TrainConfigError, match=r"has 650 tokens, more than the 600 rows"):  # the preflight too
        preflight(config, say=lambda line: None)


@pytest.fixture
def nan_loss(monkeypatch):
    """Every step's loss (and so every gradient) is NaN."""
    original = loop.mllm_loss

    def poisoned(*args, **kwargs):
        loss, aux = original(*args, **kwargs)
        return loss * jnp.nan, aux

    monkeypatch.setattr(loop, "mllm_loss", poisoned)


def test_consecutive_nonfinite_steps_stop_the_run_with_a_checkpoint(data, tmp_path, nan_loss):
    config = tiny(data, steps=10, max_consecutive_nonfinite=3)
    with pytest.raises(NonFiniteError, match=r"^3 consecutive steps had a non-finite loss or gradient \(last at step "
                                             r"3; config\.train\.max_consecutive_nonfinite=3\): check the learning "
                                             r"rate, the data and the tokenizer; checkpoint of the last finite state "
                                             rf"saved in {tmp_path}/run/checkpoints/\d+$"):
        loop.train(config, str(tmp_path / "run"), log_stream=open(os.devnull, "w"))
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logged] == [1, 2, 3]  # stopped at the third, not after all 10
    assert [x["train/nonfinite_streak"] for x in logged] == [1, 2, 3]
    (saved,) = os.listdir(tmp_path / "run" / "checkpoints")
    record = json.loads((tmp_path / "run" / "checkpoints" / saved / "record" / "metadata").read_text())
    assert record["optimizer_steps"] == 0 and record["nonfinite_steps"] == int(saved)


@pytest.mark.slow  # the stop after consecutive non-finite steps stays in the default suite
def test_a_run_of_only_nonfinite_steps_never_ends_done(data, tmp_path, nan_loss):
    """Fewer steps than the limit in a row (the default 20), fewer than max_nonfinite in all."""
    with pytest.raises(NonFiniteError, match=r"^all 3 steps of this run had a non-finite loss or gradient"):
        loop.train(tiny(data, steps=3), str(tmp_path / "run"), log_stream=open(os.devnull, "w"))
    assert os.listdir(tmp_path / "run" / "checkpoints") == ["3"]


def test_cli_exits_1_with_one_line_for_a_diverged_run(data, tmp_path):
    """learning_rate=inf: the first update makes every parameter NaN, every later step is skipped."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "seedx_jax.train", "--config", "configs/sft_edit.py:tiny",
                           "--workdir", str(tmp_path / "run"), f"--config.tokenizer={data['tokenizer']}",
                           f"--config.data.sources.edit.paths={data['edit']}",
                           f"--config.data.sources.edit.image_dir={data['image_dir']}",
                           "--config.optim.learning_rate=inf", "--config.train.steps=8", "--config.train.log_every=1",
                           "--config.train.accumulation=1", "--config.train.max_consecutive_nonfinite=2"],
                          cwd=root, capture_output=True, text=True, timeout=600, env=cpu_env(1))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("seedx_jax.train:")]
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert errors == [f"seedx_jax.train: error: 2 consecutive steps had a non-finite loss or gradient (last at step 3; "
                      f"config.train.max_consecutive_nonfinite=2): check the learning rate, the data and the "
                      f"tokenizer; checkpoint of the last finite state saved in {tmp_path}/run/checkpoints/4"], errors
    assert "Traceback" not in proc.stderr
