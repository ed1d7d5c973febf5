"""README.md is an executable spec: every fenced block it shows runs here, in README order, exactly as
written, from a fresh folder that is not the repository, holding what the README names: the tiny SEED-X
release `SEED-X-17B/` (tests/release_fixture.py; SEED-X's head counts, so it converts with no --config
as the real one does), `photo.jpg`, `a.jpg`, `b.jpg`, an SFT checkpoint `my_sft/pytorch_model.bin`, and
training data (`edit.jsonl`, `conv/*.jsonl`, `images/`).

* ```bash blocks: each command line (continuations joined) runs with `bash -c` in that folder, with the
  venv's bin first on PATH (`seedx-jax`, `python`) and one CPU device, as on a user's machine (plus a
  JAX compilation cache they share, for speed only); later commands use what earlier ones wrote
  (`convert release`, then `chat`).
* ```python blocks: each runs in this process (whose tiny-model programs other tests may have compiled)
  with that folder as working directory and a fresh namespace, so it must hold its own imports.
* Any other block must be listed in SHOWN (text that is not a command).

Only the rewrites in TRANSFORMS and the commands in SKIP differ from the README, each printed with its
reason. Commands must be concrete: `[--optional]` brackets and placeholders (`CKPT`, `...`) are refused.
"""
import dataclasses
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from release_fixture import SEEDX_HEADS, write_sft_agent, write_tiny_release
from train_fixtures import write_edit_jsonl, write_images, write_llava_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BIN = os.path.dirname(sys.executable)  # the venv running the suite: its seedx-jax and python

# Answers of the tiny release's agents, so that every command has something to draw: each answer is a
# box, then an image (the forced 64 image tokens), then end of sequence (seedx_fixtures.script_agent).
BOX = ["<loc-112>", "<loc-100>", "<loc-50>", "<loc-60>"]
ANSWERS = {"\n": "<box_start>", "<box_start>": BOX[0], BOX[0]: BOX[1], BOX[1]: BOX[2], BOX[2]: BOX[3],
           BOX[3]: "<box_end>", "<box_end>": "<img>", "</img>": "</s>"}

# Commands not run here, by their leading words: why, and where they are tested instead.
SKIP = {
    "make test": "the default suite, this test included",
    "make demo": "trains for ~14 min; tests/test_demo.py runs the quick demo (make test-slow)",
    "make demo-quick": "~3 min; tests/test_demo.py runs it (make test-slow)",
    "python -m seedx_jax.demo": "~3 min with --quick; tests/test_demo.py runs it (make test-slow)",
    "make bench": "minutes of torch-vs-jax benchmarks (bench/)",
    "make bench-accel": "needs a GPU; tests/test_accelerators.py runs the suite's --smoke mode",
    "make serve": "serves until stopped; tests/test_serve.py starts `seedx-jax serve` as typed and drives it",
    "seedx-jax serve": "serves until stopped; tests/test_serve.py starts it as typed and drives it",
    "curl": "talks to a running server; tests/test_serve.py sends the same requests",
    "sbatch": "no SLURM here; tests/test_launch.py runs launch/slurm_gpu.sbatch with stand-in srun/scontrol "
              "(make test-multiprocess)",
}

TINY_RENDER = ["--height", "32", "--width", "32", "--steps", "2"]


def _tiny_render(command: str) -> str:
    return shlex.join(shlex.split(command, comments=True) + TINY_RENDER)


def _dry_run(command: str) -> str:
    """The launcher by its path in this checkout, with --dry-run before the trainer's flags (after `--`)."""
    words = shlex.split(command, comments=True)
    at = words.index("--") if "--" in words else len(words)
    return shlex.join([os.path.join(ROOT, words[0]), *words[1:at], "--dry-run", *words[at:]])


# Commands rewritten before they run, by their leading words: (rewrite, why).
TRANSFORMS = {
    **{f"seedx-jax {cmd}": (_tiny_render, "the tiny de-tokenizers draw 32 px in 2 steps (SEED-X: 1024 px, "
                                          "50 steps)")
       for cmd in ("chat", "generate", "edit", "reconstruct")},
    **{f"launch/{script}": (_dry_run, "the launchers live in the user's checkout and drive gcloud or other "
                                      "hosts: run by path with --dry-run, which prints every command")
       for script in ("tpu_vm.sh", "gpu_hosts.sh")},
}

# Blocks that are not commands, by their first line.
SHOWN = {"seedx_jax/nn/ ": "the repository layout",
         "from gradio_client": "talks to a running server; tests/test_serve.py makes the same client calls"}

# What the commands leave where the README says (relative to the user's folder).
OUTPUTS = ["converted/seed_x_i/seedx.json", "converted/seed_x_edit/seedx.json", "converted/release.json",
           "outputs/chat.json", "outputs/chat-turn1-0.png", "outputs/grounding-boxes.png", "outputs/generate.png",
           "outputs/edit.png", "outputs/reconstruct-0.png", "outputs/reconstruct-1.png",
           "parts/agent_sft/manifest.json", "export/agent/agent/pytorch_model.bin", "runs/edit/metrics.jsonl",
           "shards"]


@dataclasses.dataclass
class Step:
    line: int  # in README.md
    kind: str  # "bash" | "python" | "skip" | "shown" (not a command)
    shown: str  # as README.md shows it
    code: str  # as run
    note: str = ""  # the rewrite or skip, and why


def _leading(command: str, table: dict) -> str | None:
    """The entry of `table` whose words begin `command`."""
    words = shlex.split(command, comments=True)
    return next((key for key in table if words[:len(key.split())] == key.split()), None)


def _lint(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    problems = [f"{w!r} is a placeholder" for w in words
                if w == "..." or re.fullmatch(r"[A-Z][A-Z0-9_]*", w.rpartition("=")[2])]
    if re.search(r"(^|\s)\[-", command.partition(" #")[0]):
        problems.append("[--optional] brackets: show a concrete command, options in a comment")
    return problems


def plan(text: str) -> tuple[list[Step], list[str]]:
    """README text -> the steps that run it, and its problems ("README.md:LINE: ...")."""
    steps, problems = [], []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.match(r"^```(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, lang = i + 1, match[1]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        if end is None:
            problems.append(f"README.md:{start}: unclosed block")
            break
        body = lines[i + 1:end]
        i = end + 1
        if lang == "python":
            code = "\n".join(body) + "\n"
            steps.append(Step(start, "python", code, code))
        elif lang == "bash":
            for line, command in _commands(body, start + 1):
                problems += [f"README.md:{line}: {p}" for p in _lint(command)]
                if (key := _leading(command, SKIP)) is not None:
                    steps.append(Step(line, "skip", command, "", f"skipped: {SKIP[key]}"))
                elif (key := _leading(command, TRANSFORMS)) is not None:
                    rewrite, why = TRANSFORMS[key]
                    run_as = rewrite(command)
                    steps.append(Step(line, "bash", command, run_as, f"run as: {run_as}  ({why})"))
                else:
                    steps.append(Step(line, "bash", command, command))
        elif (key := next((k for k in SHOWN if body and body[0].startswith(k)), None)) is not None:
            steps.append(Step(start, "shown", body[0], "", f"not run: {SHOWN[key]}"))
        else:
            problems.append(f"README.md:{start}: a ```{lang} block this test cannot run; make it ```bash or "
                            "```python, or list it in SHOWN with the reason")
    return steps, problems


def _commands(body: list[str], first_line: int):
    """(README line, command) for each command of a bash block, continuation lines joined."""
    command, line = "", None
    for number, text in enumerate(body, first_line):
        if not command and (not text.strip() or text.lstrip().startswith("#")):
            continue
        line = line or number
        if text.rstrip().endswith("\\"):
            command += text.rstrip()[:-1] + " "
            continue
        yield line, command + text
        command, line = "", None
    if command:  # a continuation into the closing fence: run as is, so that bash reports it
        yield line, command


def readme_plan():
    with open(README) as f:
        return plan(f.read())


def user_env(cache: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = BIN + os.pathsep + env["PATH"]
    # conftest's 8 fake devices are the sharding tests'; a user's CPU is one device
    env["XLA_FLAGS"] = re.sub(r"--xla_force_host_platform_device_count=\d+", "", env.get("XLA_FLAGS", "")).strip()
    # the commands load the same tiny models: a shared compilation cache spares recompiling their programs
    env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    """A user's working directory holding every file the README's commands read, named as it names them."""
    folder = tmp_path_factory.mktemp("user")
    write_tiny_release(folder / "SEED-X-17B", **SEEDX_HEADS, answers=ANSWERS)
    write_sft_agent(folder / "my_sft" / "pytorch_model.bin", SEEDX_HEADS["agent"])
    rng = np.random.default_rng(0)
    for name, (h, w) in (("photo.jpg", (300, 500)), ("a.jpg", (64, 96)), ("b.jpg", (80, 80))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / name)
    images = write_images(str(folder / "images"))
    write_edit_jsonl(str(folder / "edit.jsonl"), images)
    (folder / "conv").mkdir()
    write_llava_jsonl(str(folder / "conv" / "colours.jsonl"), images)
    return folder


def test_readme_blocks_are_all_runnable_and_concrete():
    steps, problems = readme_plan()
    assert problems == []
    commands = [s.shown for s in steps if s.kind in ("bash", "skip")]
    unused = [key for table in (SKIP, TRANSFORMS) for key in table
              if not any(_leading(c, table) == key for c in commands)]
    unused += [key for key in SHOWN if not any(s.kind == "shown" and s.shown.startswith(key) for s in steps)]
    assert unused == [], "entries that match nothing in README.md: remove them"


def test_the_plan_refuses_what_it_cannot_run():
    text = "```sh\nls\n```\n\n```bash\nseedx-jax chat --checkpoint CKPT --prompt hi [--grounding]\n```\n"
    assert plan(text)[1] == [
        "README.md:1: a ```sh block this test cannot run; make it ```bash or ```python, or list it in SHOWN "
        "with the reason",
        "README.md:6: 'CKPT' is a placeholder",
        "README.md:6: [--optional] brackets: show a concrete command, options in a comment"]


def test_every_readme_block_runs_as_written(user_folder, tmp_path, monkeypatch):
    steps, problems = readme_plan()
    assert problems == []
    env = user_env(str(tmp_path / "jax_cache"))
    monkeypatch.chdir(user_folder)
    for step in steps:
        start = time.monotonic()
        if step.kind in ("skip", "shown"):
            print(f"README.md:{step.line}: {step.shown}\n  {step.note}")
            continue
        if step.kind == "python":
            exec(compile(step.code, f"README.md:{step.line}", "exec"), {"__name__": "__main__"})
        else:  # stdin is empty: `chat` without --prompt reads its turns from it
            out = subprocess.run(["bash", "-c", step.code], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                 text=True, timeout=300)
            assert out.returncode == 0, (f"README.md:{step.line}: exit {out.returncode}\n{step.code}\n"
                                         f"{out.stderr[-3000:]}")
        print(f"README.md:{step.line}: {step.kind} {time.monotonic() - start:.1f} s"
              + (f"\n  {step.note}" if step.note else ""))
    missing = [path for path in OUTPUTS if not (user_folder / path).exists()]
    assert missing == []
