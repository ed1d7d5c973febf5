"""Paths as users type them reach the pipelines: a converted release's pipeline through a symlink finds
its shared parts where the release really is; a bucket URL is refused with the command that copies it."""
import os

import pytest
from flax import nnx

from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import CheckpointError, load_model, save_model, write_pipeline_manifest
from seedx_jax.pipelines import SeedX
from seedx_jax.vision.vit import QwenViT
from seedx_fixtures import train_sp_model


def test_a_symlinked_release_pipeline_finds_its_shared_parts(tmp_path, monkeypatch):
    """`convert release` shares `tokenizer/` and `vit/` between pipelines (`../vit`); a user who links
    `~/seedx_i -> release_out/seed_x_i` must get the release's parts, not `~/vit`."""
    release = tmp_path / "disk" / "converted"
    SeedXTokenizer(train_sp_model(str(tmp_path / "sp.model"))).save(str(release / "tokenizer"))
    save_model(str(release / "vit"), QwenViT(TINY_VISION, rngs=nnx.Rngs(0)))
    save_model(str(release / "seed_x_i" / "agent"), SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(1)))
    write_pipeline_manifest(str(release / "seed_x_i"), "seed_x_i", {"tokenizer": "../tokenizer", "vit": "../vit"})
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(release / "seed_x_i", home / "seedx_i")
    monkeypatch.chdir(home)
    monkeypatch.setenv("HOME", str(home))
    for typed in ("seedx_i", "seedx_i/", "~/seedx_i", "./seedx_i"):
        pipe = SeedX.open(typed)
        assert pipe.configs.vit == TINY_VISION and pipe.template.name == "seed_x_i", typed
    turn, _ = SeedX.load("seedx_i").chat("hi", max_new_tokens=3)
    assert len(turn.token_ids) == 3


@pytest.mark.parametrize("load", [lambda url: load_model(url), lambda url: SeedX.open(url)])
def test_bucket_urls_are_refused_with_the_copy_command(load):
    with pytest.raises(CheckpointError, match=r"gs://b/ckpt: checkpoints are read from local or mounted folders; "
                                              r"copy it first \(e.g. `gcloud storage cp -r gs://b/ckpt \.`\)"):
        load("gs://b/ckpt/")
