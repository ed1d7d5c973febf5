"""Issue 7, the long runs: every other stage overfits with only its parameters changing (slow), a
SIGTERM leaves a resumable checkpoint (slow), and 1 device, 8 devices as (2, 2, 2) and 2 processes x
4 devices follow the same loss trajectory (multiprocess). Commands: `make test-slow`,
`make test-multiprocess`."""
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from PIL import Image

import train_fixtures as F
from processes import cpu_env, free_port, run_all
from configs.train_common import TINY_GRIDS
from test_train import changed_leaves, run_stage

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.write_all(str(tmp_path_factory.mktemp("train_data")))


def _no_guidance_dropout(config):
    config.detok_loss.update(cond_drop=0.0, image_drop=0.0)


# (stage, steps, lr, required drop of the loss). Stage 1 trains only the resampler and the U-Net's
# attention K/V over a frozen U-Net that is random here (SDXL base in real use), so its loss can only
# fall a little; stage 2 trains the whole U-Net. Detok losses are averaged over 10 steps (random t).
STAGES = [("detok_stage1", 100, 3e-2, 1.1), ("detok_stage2", 100, 1e-3, 4.0), ("sft_edit", 24, 1e-2, 4.0),
          ("pretrain", 24, 1e-2, 4.0)]


@pytest.mark.slow
@pytest.mark.parametrize("stage,steps,lr,factor", STAGES, ids=[s[0] for s in STAGES])
def test_stage_overfits_with_only_its_parameters_changing(data, tmp_path, stage, steps, lr, factor):
    detok = stage.startswith("detok")
    config, result = run_stage(stage, data, tmp_path, steps=steps, lr=lr, sample_every=steps if detok else 0,
                               configure=_no_guidance_dropout if detok else None)
    losses = np.asarray([h["loss/loss"] for h in result.history])
    drop = losses[:10].mean() / losses[-10:].mean() if detok else losses[0] / losses[-3:].mean()
    print(f"{stage}: loss {losses[0]:.4f} -> {losses[-1]:.4f}, drop x{drop:.2f}")
    assert drop > factor, losses
    changed, trained = changed_leaves(config, result)
    assert changed == trained and trained
    if detok:
        sample = Image.open(tmp_path / "samples" / f"step_{steps:07d}.png")
        assert sample.size == (2 * 32, 2 * 32)  # two images: targets above, samples below


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft_edit", "detok_stage2"])
def test_bfloat16_compute_keeps_float32_master_weights(data, tmp_path, stage):
    def bf16(config):
        config.model.vit.dtype = "bfloat16"
        if stage == "sft_edit":
            config.model.agent.update(llm=dict(dtype="bfloat16", remat="full"), input_resampler=dict(dtype="bfloat16"),
                                      output_resampler=dict(dtype="bfloat16"))
        else:
            config.model.detokenizer.update(unet=dict(dtype="bfloat16", remat="full"))

    _, fp32 = run_stage(stage, data, tmp_path / "fp32", steps=3, lr=1e-3)
    _, mixed = run_stage(stage, data, tmp_path / "bf16", steps=3, lr=1e-3, configure=bf16)
    assert {x.dtype for x in jax.tree.leaves(mixed.state.params)} == {np.dtype("float32")}
    want, got = [h["loss/loss"] for h in fp32.history], [h["loss/loss"] for h in mixed.history]
    np.testing.assert_allclose(got, want, rtol=0.05)  # same data and noise, bf16 activations
    assert got != want


def _cli(data, workdir, *extra, config="configs/sft_edit.py:tiny"):
    return [sys.executable, "-m", "seedx_jax.train", "--config", config, "--workdir", str(workdir),
            f"--config.tokenizer={data['tokenizer']}", "--config.train.log_every=1",
            "--config.train.checkpoint_every=100000", *extra]


def _edit_source(data):
    return [f"--config.data.sources.edit.paths={data['edit']}", f"--config.data.sources.edit.image_dir={data['image_dir']}"]


@pytest.mark.slow
def test_sigterm_leaves_a_resumable_checkpoint(data, tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen(_cli(data, work, "--config.train.steps=10000", *_edit_source(data)), cwd=ROOT,
                            env=cpu_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else "slow"
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out
    step = int(out.split("preempted at step ")[1].split(";")[0])
    assert (work / "checkpoints" / str(step) / "state").is_dir()
    resumed = subprocess.run(_cli(data, work, f"--config.train.steps={step + 2}", *_edit_source(data)), cwd=ROOT,
                             env=cpu_env(1), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and f"done at step {step + 2}" in resumed.stderr, resumed.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps[-2:] == [step + 1, step + 2] and steps.count(step + 1) == 1


def _comp_gen_source(data, micro_batch):
    return [f"--config.data.sources.vqa.paths={data['llava']}", f"--config.data.sources.vqa.image_dir={data['image_dir']}",
            f"--config.data.sources.t2i.paths={data['tar']}", f"--config.data.sources.vqa.micro_batch={micro_batch}",
            f"--config.data.sources.t2i.micro_batch={micro_batch}"]


@pytest.mark.multiprocess
def test_one_device_eight_devices_and_two_processes_agree(data, tmp_path):
    steps, micro = 6, 4

    def configure(config):
        config.data.sources.vqa.micro_batch = config.data.sources.t2i.micro_batch = micro
        config.mesh.update(data=2, fsdp=2, tensor=2) if config.mesh.num_devices == 8 else None

    runs = {}
    for devices in (1, 8):
        _, result = run_stage("sft_comp_gen", data, tmp_path / f"d{devices}", steps=steps, lr=1e-3, devices=devices,
                              configure=configure)
        runs[devices] = [h["loss/loss"] for h in result.history]

    port, work = free_port(), tmp_path / "mp"
    args = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", f"--config.train.steps={steps}",
            "--config.optim.learning_rate=0.001", "--config.train.accumulation=1",
            *_comp_gen_source(data, micro), f"--coordinator=127.0.0.1:{port}", "--num_processes=2"]
    run_all([_cli(data, work, *args, f"--process_id={i}", config="configs/sft_comp_gen.py:tiny") for i in range(2)],
            timeout=600, cwd=ROOT, env=cpu_env(4))
    runs["2x4"] = [json.loads(line)["loss/loss"] for line in (work / "metrics.jsonl").read_text().splitlines()]
    print({k: np.round(v, 6).tolist() for k, v in runs.items()})
    np.testing.assert_allclose(runs[8], runs[1], rtol=1e-5)
    np.testing.assert_allclose(runs["2x4"], runs[1], rtol=1e-5)
    assert (work / "checkpoints" / str(steps) / "data" / "process_1-of-2.json").exists()


@pytest.mark.slow
def test_worker_processes_give_the_same_examples_and_resume(data):
    """`data.workers > 0`: preprocessing in Grain worker processes, same rows as in-process, and the
    iterator state (in the workers' own format) restores the exact continuation."""
    from seedx_jax.agent.tokenizer import SeedXTokenizer
    from seedx_jax.data.examples import ExampleBuilder, ExampleSpec
    from seedx_jax.data.formats import open_source
    from seedx_jax.data.pipeline import ExampleStream

    reader = open_source("llava_jsonl", [data["llava"]], data["image_dir"])
    build = ExampleBuilder(ExampleSpec("vqa", max_length=480, view_size=224, max_views=3, grids=TINY_GRIDS),
                           SeedXTokenizer.from_dir(data["tokenizer"]))
    rows = {}
    for workers in (0, 2):
        stream = ExampleStream("vqa", reader, build, seed=1, per_process=2, workers=workers)
        first = [stream.next_batch(2) for _ in range(3)]
        state = stream.get_state()
        rest = [stream.next_batch(2) for _ in range(2)]
        again = ExampleStream("vqa", reader, build, seed=1, per_process=2, workers=workers)
        again.set_state(state)
        for a, b in zip(rest, [again.next_batch(2) for _ in range(2)]):
            np.testing.assert_array_equal(a["cmp_pixels"], b["cmp_pixels"])
        rows[workers] = first + rest
    for a, b in zip(rows[0], rows[2]):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
