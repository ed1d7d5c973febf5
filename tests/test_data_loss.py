"""The output policy (seedx_jax.outputs) on the user's path: `seedx-jax convert | export`, save_model /
save_pipeline, `data.prepare` and training workdirs never delete what they did not write, never write
where an input lies, replace only their own earlier output (with --overwrite), clean up after Ctrl-C,
SIGTERM and kill -9, and respect the umask. Commands run as a user types them: relative paths from
the working directory they are typed in."""
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest
import torch
from flax import nnx

from seedx_jax.agent.config import TINY_VISION
from seedx_jax.checkpoint import load_model, save_model
from seedx_jax.convert.cli import main as convert
from seedx_jax.outputs import OutputError
from seedx_jax.vision.vit import QwenViT
from parity import randomize_
from processes import interruptible
from torch_vision import TorchQwenViT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user's folder, the working directory: a release tree with the ViT file, their own notes."""
    monkeypatch.chdir(tmp_path)
    os.makedirs("release/QwenViT")
    torch.manual_seed(0)
    torch.save(randomize_(TorchQwenViT(TINY_VISION)).state_dict(), "release/QwenViT/qwen_vit_G.pt")
    with open("vit.json", "w") as f:
        json.dump(TINY_VISION.to_dict(), f)
    with open("notes.txt", "w") as f:
        f.write("mine")
    return tmp_path


def snapshot(folder) -> dict:
    """Every file under `folder` with its bytes."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(d, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def convert_vit(*extra) -> int:
    return convert(["vit", "release/QwenViT/qwen_vit_G.pt", "--config", "vit.json", "--quiet", *map(str, extra)])


@pytest.mark.parametrize("out, message", [
    ("release/QwenViT/qwen_vit_G.pt", "is the input"),  # the source itself
    ("release/QwenViT", "contains the input"),  # the source's folder
    ("release", "contains the input"),  # a parent of the source
    (".", "contains the input"),  # the working directory
])
def test_out_overlapping_the_source_is_refused_even_with_overwrite(user, capsys, out, message):
    before = snapshot(user)
    for flags in ((), ("--overwrite",)):
        assert convert_vit("--out", out, *flags) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert snapshot(user) == before


def test_a_folder_of_other_files_is_never_replaced(user, capsys):
    os.makedirs("mine")
    with open("mine/thesis.tex", "w") as f:
        f.write("years of work")
    before = snapshot(user)
    for flags in ((), ("--overwrite",)):
        assert convert_vit("--out", "mine", *flags) == 2
        assert "holds other files (thesis.tex)" in capsys.readouterr().err
    assert convert_vit("--out", "notes.txt") == 2
    assert "is a file" in capsys.readouterr().err
    assert snapshot(user) == before


def test_own_output_is_replaced_only_with_overwrite_from_another_cwd(user, capsys, monkeypatch):
    assert convert_vit("--out", "converted/vit") == 0
    first = os.stat("converted/vit/manifest.json").st_mtime_ns
    assert convert_vit("--out", "converted/vit") == 2
    assert "already holds a vit output; pass --overwrite" in capsys.readouterr().err
    assert convert_vit("--out", "converted/vit/", "--overwrite") == 0  # trailing slash as typed
    assert os.stat("converted/vit/manifest.json").st_mtime_ns != first
    assert sorted(os.listdir("converted")) == ["vit"]  # no partial or replaced sibling left
    # an output of another kind is not replaced either: exporting over the converted ViT
    assert convert(["export", "converted/vit", "--out", "converted/vit", "--quiet"]) == 2
    assert "is the input" in capsys.readouterr().err
    # relative paths from another working directory, `~` too
    os.makedirs("elsewhere")
    monkeypatch.chdir("elsewhere")
    monkeypatch.setenv("HOME", str(user))
    assert convert(["export", "../converted/vit", "--out", "~/exported", "--quiet"]) == 0
    assert os.path.isfile(user / "exported" / "qwen_vit_G.pt")
    assert load_model("../converted/vit").config == TINY_VISION


def test_save_model_follows_the_policy(user):
    model = QwenViT(TINY_VISION, rngs=nnx.Rngs(0))
    save_model("ckpt/vit", model)  # relative
    with pytest.raises(OutputError, match="already holds a vit output"):
        save_model("ckpt/vit", model)
    save_model("ckpt/vit", model, overwrite=True)
    with pytest.raises(OutputError, match="holds other files"):
        save_model(".", model, overwrite=True)
    assert load_model("ckpt/vit").config == TINY_VISION
    assert open("notes.txt").read() == "mine"


def test_unwritable_parent_is_one_line(user, capsys):
    # a read-only folder stops no root user (CI runs as root); /sys refuses everyone
    locked = "/sys/seedx_vit" if os.geteuid() == 0 else "locked/vit"
    if locked == "locked/vit":
        os.makedirs("locked")
        os.chmod("locked", 0o555)
    try:
        assert convert_vit("--out", locked) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"--out {locked}: cannot" in err[0], err
        assert "not permitted" in err[0] or "Permission denied" in err[0], err
    finally:
        if os.path.isdir("locked"):
            os.chmod("locked", 0o755)


def test_outputs_respect_the_umask(user):
    old = os.umask(0o002)
    try:
        assert convert_vit("--out", "shared/vit") == 0
    finally:
        os.umask(old)
    for d, dirs, files in os.walk("shared"):
        for name in dirs:
            assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o775, os.path.join(d, name)
        for name in files:
            assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o664, os.path.join(d, name)


def _convert_process(out: str, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "seedx_jax", "convert", "vit", "release/QwenViT/qwen_vit_G.pt", "--config",
               "vit.json", "--out", out, "--flush-mb", "0", *extra]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=interruptible)


def _wait_for_partial(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not any(".partial-" in f for f in os.listdir(".")):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the conversion never started writing"
        time.sleep(0.005)


@pytest.mark.parametrize("sig, code, said", [(signal.SIGTERM, 143, "terminated (SIGTERM)"),
                                             (signal.SIGINT, 130, "interrupted (Ctrl-C)")])
def test_signals_remove_the_partial_output_with_one_line(user, sig, code, said):
    proc = _convert_process("vit")
    _wait_for_partial(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == f"seedx-jax convert vit: {said}; nothing was written to vit", err
    assert "Traceback" not in err
    assert sorted(os.listdir(".")) == ["notes.txt", "release", "vit.json"]


class _RaisesSigintWhenFreed:
    """As a JAX buffer freed by a garbage-collector callback while Ctrl-C arrives: the handler's
    KeyboardInterrupt is raised inside a finaliser, where Python drops it and goes on."""

    def __del__(self):
        signal.raise_signal(signal.SIGINT)


def test_an_interrupt_python_swallowed_still_stops_the_run_before_it_writes(tmp_path, capsys):
    from seedx_jax.exits import interrupts_as_exceptions
    from seedx_jax.outputs import OutputFiles
    from seedx_jax.progress import Progress

    with interrupts_as_exceptions():
        files = OutputFiles(str(tmp_path / "out"), "generate")
        files.write(".json", lambda path: open(path, "w").write("{}"))
        _RaisesSigintWhenFreed()  # freed at once: the interrupt is dropped and the block goes on
        with pytest.raises(KeyboardInterrupt):
            files.commit()
        with pytest.raises(KeyboardInterrupt):
            with Progress().stage("rendering"):
                pass
        files.abort()
    assert "Exception ignored" not in capsys.readouterr().err  # no traceback-like noise either
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("swallowed", [False, True])
def test_ctrl_c_while_the_command_imports_is_one_line(monkeypatch, capsys, swallowed):
    import importlib
    import types

    from seedx_jax.exits import command_line

    def interrupted(name):
        if swallowed:  # during an import, inside a garbage-collector callback
            _RaisesSigintWhenFreed()
            return types.SimpleNamespace(main=lambda: 0)
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert command_line() == 130
    assert capsys.readouterr().err.strip() == "seedx-jax: interrupted (Ctrl-C)"


def test_kill_9_leftovers_are_removed_by_the_next_run(user, capsys):
    proc = _convert_process("vit")
    _wait_for_partial(proc)
    proc.kill()
    proc.wait(timeout=30)
    left = [f for f in os.listdir(".") if ".partial-" in f]
    assert left, "kill -9 left no partial folder to clean"
    assert convert_vit("--out", "vit") == 0
    assert f"removed {left[0]}, left by an interrupted run (process {proc.pid})" in capsys.readouterr().err
    assert sorted(os.listdir(".")) == ["notes.txt", "release", "vit", "vit.json"]


def test_training_workdir_is_ours_or_empty_and_holds_no_input(tmp_path, monkeypatch):
    import train_fixtures as F
    from seedx_jax.train import workdir as run_dir
    from seedx_jax.train.loop import train

    data = F.write_all(str(tmp_path / "data"))
    config = F.tiny_config("sft_edit", data, steps=1)
    monkeypatch.chdir(tmp_path)
    os.makedirs("papers")
    open("papers/draft.txt", "w").write("mine")
    with pytest.raises(run_dir.WorkdirError, match="holds files that are not a seedx_jax training run"):
        train(config, "papers")
    with pytest.raises(run_dir.WorkdirError, match="contains the input"):
        train(config, ".")  # the data lie under the working directory
    with pytest.raises(run_dir.WorkdirError, match="lies inside the input"):
        train(config, os.path.join(data["tokenizer"], "run"))
    os.makedirs("runs/a")
    run_dir.mark_workdir("runs/a", "sft_comp_gen")
    with pytest.raises(run_dir.WorkdirError, match="holds a sft_comp_gen run; config.stage is sft_edit"):
        train(config, "runs/a")
    assert open("papers/draft.txt").read() == "mine" and os.listdir("papers") == ["draft.txt"]


def test_prepare_and_demo_outputs_follow_the_policy(tmp_path, monkeypatch, capsys):
    import train_fixtures as F
    from seedx_jax.data.prepare import main as prepare
    from seedx_jax.demo.__main__ import main as demo

    monkeypatch.chdir(tmp_path)
    images = F.write_images("images")
    F.write_llava_jsonl("conv.jsonl", images)
    argv = ["--format", "llava_jsonl", "--paths", "conv.jsonl", "--image-dir", "images"]
    assert prepare(argv + ["--out", "images"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert prepare(argv + ["--out", "shards"]) == 0
    assert prepare(argv + ["--out", "shards"]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert prepare(argv + ["--out", "shards", "--overwrite"]) == 0
    assert demo(["--out", "images", "--overwrite", "--quick"]) == 2  # before anything is trained
    assert "holds other files" in capsys.readouterr().err
    for argv in (["--out", " "], ["--seed", "-1"], ["--train-scenes", "0"]):
        with pytest.raises(SystemExit) as exit_:
            demo(argv + ["--quick"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and argv[0] in err[-1], err
    assert sorted(os.listdir(".")) == ["conv.jsonl", "images", "shards"]
