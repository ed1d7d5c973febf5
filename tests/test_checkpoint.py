"""Orbax model checkpoints: exact round trip of every kind, restore onto other meshes, atomic writes."""
import contextlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seedx_jax import sharding
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.checkpoint import CheckpointError, load_model, save_model
from seedx_jax.lora import LoraConfig
from seedx_jax.vision.vit import QwenViT


def _leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


@pytest.mark.parametrize("make", [
    lambda: QwenViT(TINY_VISION, rngs=nnx.Rngs(0)),
    lambda: SeedXAgent(AgentConfig.preset("tiny").replace(
        llm=AgentConfig.preset("tiny").llm.replace(lora=LoraConfig(rank=2, embedding_rows=(320, 650)))),
        rngs=nnx.Rngs(0)),
])
def test_round_trip_is_exact_with_the_config(tmp_path, make):
    model = make()
    save_model(str(tmp_path / "m"), model)
    again = load_model(str(tmp_path / "m"))
    assert again.config == model.config
    assert all((a == b).all() for a, b in zip(_leaves(model), _leaves(again)))
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_saved_on_8_devices_restores_on_4_and_1(tmp_path):
    cfg = AgentConfig.preset("tiny")
    mesh8 = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    model = sharding.create_sharded(lambda: SeedXAgent(cfg, rngs=nnx.Rngs(3)), mesh8)
    assert len(model.llm.layers.mlp.up_proj.kernel[...].sharding.device_set) == 8
    save_model(str(tmp_path / "agent"), model)
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 320, (2, 16)))
    outputs = []
    for devices in (jax.devices()[:4], jax.devices()[:1]):
        mesh = sharding.make_mesh({"data": 1, "fsdp": len(devices), "tensor": 1}, devices)
        restored = load_model(str(tmp_path / "agent"), "agent", mesh=mesh)
        kernel = restored.llm.layers.mlp.up_proj.kernel[...]
        assert kernel.sharding.device_set == set(devices)
        outputs.append(np.asarray(restored(ids).logits))
    reference = np.asarray(model(ids).logits)
    for out in outputs:
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
    assert np.abs(reference).max() > 0.01


def test_wrong_kind_and_damaged_checkpoints(tmp_path):
    save_model(str(tmp_path / "vit"), QwenViT(TINY_VISION, rngs=nnx.Rngs(0)))
    with pytest.raises(CheckpointError, match="holds a 'vit' checkpoint, expected 'agent'"):
        load_model(str(tmp_path / "vit"), "agent")
    with pytest.raises(CheckpointError, match="not a seedx_jax checkpoint"):
        load_model(str(tmp_path))
    with pytest.raises(CheckpointError, match="cannot checkpoint a Linear"):
        from seedx_jax.nn import Linear
        save_model(str(tmp_path / "x"), Linear(2, 2, logical_axes=(None, None), rngs=nnx.Rngs(0)))
    assert sorted(os.listdir(tmp_path)) == ["vit"]  # the refused write left nothing behind


def test_truncated_state_is_one_error(tmp_path):
    save_model(str(tmp_path / "vit"), QwenViT(TINY_VISION, rngs=nnx.Rngs(0)))
    files = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "vit" / "state") for f in fs]
    biggest = max(files, key=os.path.getsize)
    with open(biggest, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(CheckpointError, match="cannot restore the vit state"):
        load_model(str(tmp_path / "vit"))


def test_loads_with_and_without_an_active_mesh_context(tmp_path, monkeypatch):
    """`load_model` with or without `mesh=`, inside or outside `jax.set_mesh` (an abstract mesh cannot
    place a restore); a relative path, a trailing slash and a symlink as users type them."""
    model = QwenViT(TINY_VISION, rngs=nnx.Rngs(0))
    monkeypatch.chdir(tmp_path)
    save_model("ckpt/vit", model)
    os.symlink("ckpt", "link")
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 1}, jax.devices()[:4])
    want = _leaves(model)
    for path in ("ckpt/vit", "ckpt/vit/", "link/vit"):
        for active in (None, mesh):
            for given in (None, mesh):
                with jax.set_mesh(active) if active is not None else contextlib.nullcontext():
                    got = load_model(path, "vit", mesh=given)
                assert all((a == b).all() for a, b in zip(want, _leaves(got))), (path, active, given)
