"""Paths as users type them reach the pipelines: a converted release's pipeline through a symlink finds
its shared parts where the release really is; a bucket URL is refused with the command that copies it;
`~` in every path argument of every command, quoted or after `=`, is the home folder."""
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


def test_every_path_argument_of_every_command_expands_the_home_folder(tmp_path, monkeypatch):
    """Shells leave `'~/x'` and `--opt=~/x` as typed: every command's path arguments expand them."""
    from seedx_jax.cli import build_parser
    from seedx_jax.convert.cli import build_parser as convert_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    home = lambda name: str(tmp_path / name)  # noqa: E731
    args = build_parser().parse_args(["chat", "--checkpoint", "~/ckpt", "--image", "~/a.jpg", "--image=~/b.jpg",
                                      "--out=~/out", "--noise", "~/noise.npy", "--prompt", "hi"])
    assert (args.checkpoint, args.image, args.out, args.noise) == (
        home("ckpt"), [home("a.jpg"), home("b.jpg")], home("out"), home("noise.npy"))
    args = build_parser().parse_args(["edit", "--checkpoint=~/ckpt", "--image=~/a.jpg", "--prompt", "x"])
    assert (args.checkpoint, args.image) == (home("ckpt"), home("a.jpg"))
    args = build_parser().parse_args(["reconstruct", "--checkpoint", "~/ckpt", "--image", "~/a.jpg"])
    assert args.image == [home("a.jpg")]
    args = build_parser().parse_args(["generate", "--checkpoint", "~/ckpt", "--prompt", "~/not/a/path"])
    assert args.prompt == "~/not/a/path"  # a caption is text
    convert = convert_parser()
    args = convert.parse_args(["vit", "~/vit.pt", "--out", "~/vit", "--config=~/vit.json"])
    assert (args.source, args.out, args.config) == (home("vit.pt"), home("vit"), home("vit.json"))
    args = convert.parse_args(["agent", "~/agent.bin", "--llm", "~/llm", "--out=~/agent", "--config", "~/a.json"])
    assert (args.source, args.llm, args.out, args.config) == (home("agent.bin"), home("llm"), home("agent"),
                                                              home("a.json"))
    args = convert.parse_args(["detokenizer", "~/stage1.bin", "--sdxl=~/sdxl", "--out", "~/detok"])
    assert (args.source, args.sdxl, args.out) == (home("stage1.bin"), home("sdxl"), home("detok"))
    args = convert.parse_args(["release", "~/SEED-X-17B", "--out", "~/converted", "--config", "agent=~/agent.json"])
    assert (args.source, args.out, args.config) == (home("SEED-X-17B"), home("converted"),
                                                    [("agent", home("agent.json"))])
    for what in ("llama", "tokenizer", "export"):
        args = convert.parse_args([what, "~/in", "--out", "~/out"])
        assert (args.source, args.out) == (home("in"), home("out")), what


def test_a_converter_source_under_the_home_folder_is_looked_for_there(tmp_path, monkeypatch, capsys):
    from seedx_jax.cli import main

    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["convert", "vit", "~/qwen_vit_G.pt", "--out", "~/vit", "--quiet"]) == 2
    assert capsys.readouterr().err.strip() == f"seedx-jax convert vit: error: {tmp_path}/qwen_vit_G.pt: no such file"
    assert os.listdir(tmp_path) == []
