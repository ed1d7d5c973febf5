"""The training entry point on the tiny configs (issue 7): a stage overfits its fixtures with only its
trainable parameters changing, a run interrupted and resumed ends bit-identical to an uninterrupted
one (data order included), metrics reach TensorBoard, and bad configs fail before any compile.

The other stages, SIGTERM and the device/process-count runs are in test_train_slow.py (slow,
multiprocess); they share `run_stage` and `changed_leaves` from here.
"""
import json
import os
import struct

import jax
import numpy as np
import pytest
from flax import nnx

import train_fixtures as F
from seedx_jax import sharding
from seedx_jax.train.build import TrainConfigError, build_trainee, make_train_mesh, model_configs
from seedx_jax.train.loop import train
from seedx_jax.train.stages import trainable


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.write_all(str(tmp_path_factory.mktemp("train_data")))


def run_stage(stage, data, workdir, *, steps, lr, devices=1, configure=None, **train_overrides):
    config = F.tiny_config(stage, data, steps=steps, devices=devices, log_every=1, checkpoint_every=1000,
                           sample_every=0, accumulation=1)
    config.train.update(train_overrides)
    config.optim.learning_rate = lr
    if configure:
        configure(config)
    return config, train(config, str(workdir), log_stream=open(os.devnull, "w"))


def initial_state(config) -> nnx.State:
    mesh = make_train_mesh(config.mesh)
    with jax.set_mesh(mesh):
        return nnx.state(build_trainee(config, mesh, sharding.rules_with_overrides({})))


def changed_leaves(config, result) -> tuple[set, set]:
    """(paths of the parameters that differ from the initial model, paths the stage's filter trains)."""
    before = initial_state(config)
    after = nnx.state(nnx.merge(result.graphdef, result.state.params, result.rest))
    lora = model_configs(config).get("agent")
    wanted = trainable(config.stage, lora and lora.llm.lora)
    changed, trained = set(), set()
    for (path, old), (_, new) in zip(nnx.to_flat_state(before), nnx.to_flat_state(after)):
        if not np.array_equal(np.asarray(old[...]), np.asarray(new[...])):
            changed.add(path)
        if wanted(path, new):
            trained.add(path)
    return changed, trained


def test_sft_overfits_and_a_resumed_run_is_bit_identical(data, tmp_path):
    steps, cut = 24, 10
    config, full = run_stage("sft_comp_gen", data, tmp_path / "full", steps=steps, lr=1e-2)
    losses = [h["loss/loss"] for h in full.history]
    assert losses[0] / np.mean(losses[-3:]) > 4.0, losses  # overfits its 8 samples
    assert full.history[-1]["loss/rec_loss"] >= 0 and full.status == "done"
    changed, trained = changed_leaves(config, full)
    assert changed == trained and len(trained) > 20  # only the stage's parameters moved, all of them

    _, first = run_stage("sft_comp_gen", data, tmp_path / "cut", steps=cut, lr=1e-2)
    half_written = tmp_path / "cut" / "checkpoints" / f"{cut + 5}.orbax-checkpoint-tmp-1234"  # a save cut short
    (half_written / "state").mkdir(parents=True)
    (half_written / "state" / "junk").write_bytes(b"\0" * 10)
    _, resumed = run_stage("sft_comp_gen", data, tmp_path / "cut", steps=steps, lr=1e-2)
    assert first.step == cut and resumed.history[0]["step"] == cut + 1  # it resumed, not restarted
    assert [h["loss/loss"] for h in first.history + resumed.history] == losses  # same data, same order
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    record = json.loads((tmp_path / "cut" / "checkpoints" / str(steps) / "record" / "metadata").read_text())
    assert record["step"] == steps and record["optimizer_steps"] == steps
    assert sum(s["examples"] for s in record["sources"].values()) == 2 * steps


def _events(path: str) -> dict[str, list[tuple[int, float]]]:
    """TFRecord framing, parsed here; the Event protos with tensorboardX's generated classes."""
    from tensorboardX.proto.event_pb2 import Event

    scalars = {}
    with open(path, "rb") as f:
        while header := f.read(12):
            (length,) = struct.unpack("<Q", header[:8])
            event = Event.FromString(f.read(length))
            f.read(4)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_metrics_and_kept_checkpoints(data, tmp_path):
    _, result = run_stage("sft_edit", data, tmp_path, steps=6, lr=1e-3, checkpoint_every=1, keep=2, keep_every=3)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [3, 5, 6]  # 2 newest + every 3rd
    (events,) = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    scalars = _events(str(events))
    for tag in ("loss/loss", "loss/lm_loss", "loss/rec_loss", "train/lr", "train/grad_norm",
                "perf/tokens_per_s", "perf/images_per_s", "perf/step_time_s"):
        assert [s for s, _ in scalars[tag]] == list(range(1, 7)), tag
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([v for _, v in scalars["loss/loss"]], [x["loss/loss"] for x in lines], rtol=1e-6)
    assert [v for _, v in scalars["train/lr"]][:3] == pytest.approx([0.0, 5e-4, 1e-3])  # 2 warmup steps
    assert all(x["perf/images_per_s"] > 0 and x["perf/tokens_per_s"] > 0 for x in lines)


def test_bad_configs_fail_before_compiling(data, tmp_path):
    config = F.tiny_config("sft_edit", data, steps=2, devices=8)
    config.mesh.update(data=2, fsdp=4)
    config.data.sources.edit.micro_batch = 6
    with pytest.raises(TrainConfigError, match=r"micro_batch=6 is not divisible by the batch mesh axes .*product 8"):
        train(config, str(tmp_path / "a"))
    config = F.tiny_config("sft_edit", data, steps=2)
    config.data.sources.edit.task = "t2i"
    with pytest.raises(TrainConfigError, match=r"edit\.task='t2i': stage sft_edit trains on \('edit',\)"):
        train(config, str(tmp_path / "b"))
    config = F.tiny_config("sft_edit", data, steps=2)
    config.data.sources.edit.paths = str(tmp_path / "nothing*.jsonl")
    with pytest.raises(TrainConfigError, match=r"edit\.paths=.*matches no files"):
        train(config, str(tmp_path / "c"))
    config = F.tiny_config("sft_edit", data, steps=2)
    config.tokenizer = str(tmp_path / "none")
    with pytest.raises(TrainConfigError, match="is not a tokenizer directory"):
        train(config, str(tmp_path / "d"))
    assert not (tmp_path / "a" / "checkpoints").exists()


@pytest.mark.parametrize("stage, field, value, message", [
    ("sft_edit", "model.agent.llm.remat", "bogus",
     "config.model.agent.llm.remat='bogus' is not one of ['dots', 'dots_no_batch', 'full', 'none']"),
    ("sft_edit", "model.agent.llm.hidden_size", 40, "config.model.agent.input_resampler.embed_dim=64 and "
     "config.model.agent.output_resampler.kv_dim=64 must equal config.model.agent.llm.hidden_size=40"),
    ("sft_edit", "model.agent.input_resampler.embed_dim", 66, "config.model.agent.input_resampler.embed_dim=66 is "
     "not divisible by config.model.agent.input_resampler.num_heads=4"),
    ("sft_edit", "model.vit.output_dim", 32, "config.model.agent.input_resampler.kv_dim=16 (the ViT features the "
     "agent takes) != config.model.vit.output_dim=32"),
    ("sft_edit", "model.lora.embedding_rows", (0, 700),
     "config.model.lora.embedding_rows=(0, 700) exceeds config.model.agent.llm.vocab_size=650"),
    ("sft_edit", "optim.warmup_steps", 500,
     "config.optim.warmup_steps=500 must be in [0, config.optim.total_steps=200)"),
    ("sft_edit", "train.accumulation", 0, "config.train.accumulation=0 must be positive"),
    ("sft_edit", "mesh.fsdp", 0, "config.mesh.fsdp=0: sizes must be positive or -1"),
    ("detok_stage2", "model.detokenizer.unet.down_block_types", ("DownBlock2D",),
     "config.model.detokenizer.unet.down_block_types has 1 entries, config.model.detokenizer.unet.block_out_channels "
     "has 3"),
    ("detok_stage2", "model.detokenizer.unet.in_channels", 4, "config.model.detokenizer.unet.in_channels=4: "
     "detok_stage2 needs 2 x the 4 latent channels (preset stage2 or tiny_edit)"),
])
def test_config_errors_name_the_full_path_of_the_field(data, tmp_path, stage, field, value, message):
    config = F.tiny_config(stage, data, steps=1)
    *parents, name = field.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    node[name] = value
    with pytest.raises(TrainConfigError) as caught:
        train(config, str(tmp_path / "run"))
    assert str(caught.value) == message


def test_init_checkpoints_are_loaded_and_checked(data, tmp_path):
    """config.init.<part> = a converted checkpoint directory: loaded over the fresh model (LoRA stays
    fresh); a checkpoint of another shape is a one-line error naming the parameter."""
    from seedx_jax.agent.model import SeedXAgent
    from seedx_jax.checkpoint import save_model
    from seedx_jax.vision.vit import QwenViT

    config = F.tiny_config("sft_edit", data, steps=1)
    cfgs = model_configs(config)
    agent = SeedXAgent(cfgs["agent"].replace(llm=cfgs["agent"].llm.replace(lora=None)), rngs=nnx.Rngs(123))
    save_model(str(tmp_path / "agent"), agent)
    config.init.agent = str(tmp_path / "agent")
    loaded = initial_state(config)
    np.testing.assert_array_equal(loaded["agent"]["patch_pos_embed"][...], agent.patch_pos_embed[...])
    np.testing.assert_array_equal(loaded["agent"]["llm"]["embed_tokens"]["embedding"][...],
                                  agent.llm.embed_tokens.embedding[...])
    fresh = initial_state(F.tiny_config("sft_edit", data, steps=1))
    assert not np.array_equal(fresh["agent"]["patch_pos_embed"][...], agent.patch_pos_embed[...])

    save_model(str(tmp_path / "vit"), QwenViT(cfgs["vit"].replace(width=32, heads=2), rngs=nnx.Rngs(0)))
    config.init.vit = str(tmp_path / "vit")
    with pytest.raises(TrainConfigError, match=r"config\.init\.vit=.*/vit: attn_pool/kv_proj/kernel has shape \(32, 16\), "
                                               r"the configured model \(64, 16\)"):
        initial_state(config)


def test_mfu_inputs():
    """The FLOP count comes from XLA's cost analysis of the compiled step; peaks by device kind."""
    from types import SimpleNamespace

    from seedx_jax.train.metrics import Throughput, compiled_flops, peak_flops

    x = jax.ShapeDtypeStruct((64, 96), np.float32)
    w = jax.ShapeDtypeStruct((96, 32), np.float32)
    assert compiled_flops(jax.jit(lambda a, b: a @ b).lower(x, w).compile()) == 2 * 64 * 96 * 32
    kinds = {"TPU v5 lite": 197e12, "TPU v5p": 459e12, "TPU v4": 275e12, "NVIDIA H100 80GB HBM3": 989e12, "cpu": None}
    for kind, want in kinds.items():
        assert peak_flops(SimpleNamespace(device_kind=kind)) == want, kind
    assert peak_flops(SimpleNamespace(device_kind="cpu"), override_tflops=2.0) == 2e12
    meter = Throughput()
    meter.add(100.0, 2.0)
    meter.add(300.0, 2.0)
    scalars = meter.report(1e9, 1e12)
    t = scalars["perf/step_time_s"]
    assert scalars["perf/tokens_per_s"] == pytest.approx(200 / t) and scalars["perf/mfu"] == pytest.approx(1e-3 / t)


def test_cli_exits_2_with_one_line_for_a_bad_config(data, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-m", "seedx_jax.train", "--config", "configs/sft_edit.py:tiny",
                           "--workdir", str(tmp_path), f"--config.tokenizer={data['tokenizer']}",
                           "--config.mesh.num_devices=1", "--config.data.sources.edit.paths=/nonexistent/*.jsonl"],
                          cwd=root, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "seedx_jax.train: error: config.data.sources.edit.paths='/nonexistent/*.jsonl' matches no files"]


@pytest.mark.slow  # the sharded random init of a ViT + U-Net trainee compiles for ~30 s on CPU
def test_stage2_starts_from_a_stage1_checkpoint(data, tmp_path):
    """As SDXLAdapterWithLatentImage: the stage-1 conv_in kernel fills input channels 0..3 of the 8-channel one, the
    latent-image channels start at zero; every other parameter is the stage-1 one."""
    from seedx_jax.checkpoint import save_model
    from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig

    stage1 = Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(7))
    save_model(str(tmp_path / "stage1"), stage1)
    config = F.tiny_config("detok_stage2", data, steps=1)
    config.init.detokenizer = str(tmp_path / "stage1")
    loaded = initial_state(config)["detokenizer"]
    kernel = np.asarray(loaded["unet"]["conv_in"]["kernel"][...])
    assert kernel.shape[2] == 8
    np.testing.assert_array_equal(kernel[:, :, :4], stage1.unet.conv_in.kernel[...])
    assert not kernel[:, :, 4:].any() and stage1.unet.conv_in.kernel[...].any()
    np.testing.assert_array_equal(loaded["unet"]["conv_out"]["kernel"][...], stage1.unet.conv_out.kernel[...])
    np.testing.assert_array_equal(loaded["resampler"]["latents"][...], stage1.resampler.latents[...])


def test_stage1_can_train_the_whole_unet():
    """`train.unet_trainable`: SEED-X's to_k/to_v only (default) or every U-Net parameter (a U-Net with
    no pretraining, as in the shapes-world demo); the ViT and VAE stay frozen either way."""
    from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
    from seedx_jax.train.stages import DetokTrainee
    from seedx_jax.vision.vit import QwenViT, VisionConfig

    model = DetokTrainee(QwenViT(VisionConfig.preset("qwen_vit_tiny", output_dim=16), rngs=nnx.Rngs(0)),
                         Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(1)))
    flat = list(nnx.to_flat_state(nnx.state(model, nnx.Param)))

    def trained(unet):
        keep = trainable("detok_stage1", unet=unet)
        return {"/".join(map(str, path)) for path, var in flat if keep(path, var)}

    unet_params = {"/".join(map(str, p)) for p, _ in flat if p[:2] == ("detokenizer", "unet")}
    kv, everything = trained("attention_kv"), trained("all")
    assert kv < everything and unet_params <= everything
    assert all(p.startswith("detokenizer/resampler") or "/to_k/" in p or "/to_v/" in p for p in kv)
    assert not any(p.startswith(("vit", "detokenizer/vae")) for p in everything)
    with pytest.raises(ValueError, match="unet='some'"):
        trainable("detok_stage1", unet="some")
