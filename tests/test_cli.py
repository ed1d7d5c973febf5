"""The pipelines and `seedx-jax chat | generate | edit | reconstruct` end to end on tiny random
checkpoints written by the test (scripted so the answers hold boxes and images)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.prompts import PromptError
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import CheckpointError, save_pipeline
from seedx_jax.cli import main
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.pipelines import SeedX
from seedx_jax.vision.vit import QwenViT
from seedx_fixtures import script_agent, train_sp_model

BOX = ["<loc-112>", "<loc-100>", "<loc-50>", "<loc-60>"]
SCRIPT = {  # base grounding prompt ends in <box_start>; "[/INST]\n" prompts end in "\n"
    T.BOX_START: BOX[0], BOX[0]: BOX[1], BOX[1]: BOX[2], BOX[2]: BOX[3], BOX[3]: T.BOX_END, T.BOX_END: "</s>",
    "\n": T.IMG_START, T.IMG_END: "</s>"}
FAST = ["--steps", "2", "--height", "32", "--width", "32", "--quiet"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    tok = SeedXTokenizer(train_sp_model(str(root / "sp.model")))
    vit = QwenViT(TINY_VISION, rngs=nnx.Rngs(0))
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(1))
    script_agent(agent, tok, SCRIPT)
    for name, preset, template in (("stage1", "tiny", "seed_x_i"), ("stage2", "tiny_edit", "seed_x_edit")):
        save_pipeline(str(root / name), tokenizer=tok, vit=vit, agent=agent, template=template,
                      detokenizer=Detokenizer(DetokenizerConfig.preset(preset), rngs=nnx.Rngs(2)))
    image = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 500, 3), np.uint8)).save(image)
    (root / "broken.png").write_bytes(b"not a png")
    return root


def run(*argv):
    return main([str(a) for a in argv])


def test_chat_grounding_draws_boxes_and_records(ckpts, tmp_path, capsys):
    rc = run("chat", "--checkpoint", ckpts / "stage1", "--template", "seed_x", "--image", ckpts / "photo.png",
             "--prompt", "a dog", "--grounding", "--out", tmp_path, "--quiet")
    assert rc == 0
    record = json.loads((tmp_path / "chat.json").read_text())
    # <loc-112><loc-100><loc-50><loc-60> on 500x300: centre (250, 133.9), size (111.6, 80.4)
    assert record["turns"][0]["boxes"] == [[194, 93, 305, 174]]
    assert record["template"] == "seed_x" and record["outputs"] == [str(tmp_path / "chat-boxes.png")]
    drawn = np.asarray(Image.open(tmp_path / "chat-boxes.png"))
    assert drawn.shape == (300, 500, 3) and (drawn[93, 194:305] == [255, 0, 0]).all()


@pytest.mark.slow  # ~30 s; sharded loading and forward passes are in the default suite (test_checkpoint, test_sharding)
def test_pipeline_loaded_onto_a_mesh_answers_and_draws_as_on_one_device(ckpts):
    """`SeedX.load(..., mesh=)` (the notebooks' path for models larger than a chip): parameters land
    sharded over 8 devices and the chat and the rendered image match the single-device pipeline."""
    from seedx_jax.sharding import make_mesh

    mesh = make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    ref, sharded = SeedX.load(str(ckpts / "stage1")), SeedX.load(str(ckpts / "stage1"), mesh=mesh)
    kernel = sharded.agent.llm.layers.mlp.gate_proj.kernel[...]
    assert len(kernel.sharding.device_set) == 8 and not kernel.sharding.is_fully_replicated
    image = str(ckpts / "photo.png")
    (want, _), (got, _) = (p.chat("What is it?", [image], max_new_tokens=70) for p in (ref, sharded))
    assert got.token_ids == want.token_ids
    np.testing.assert_allclose(got.image_features, want.image_features, rtol=1e-4, atol=1e-5)
    kw = dict(height=32, width=32, sampler=SamplerConfig(num_steps=2))
    drawn = [p.render(want.image_features, **kw).astype(np.int16) for p in (ref, sharded)]
    assert np.abs(drawn[0] - drawn[1]).max() <= 1


def test_multi_turn_chat_keeps_history(ckpts):
    pipe = SeedX.load(str(ckpts / "stage1"))
    turn, conv = pipe.chat("What is it?", [str(ckpts / "photo.png")], max_new_tokens=70)
    assert turn.token_ids[:66] == pipe.tokenizer.encode(T.IMG_START + T.image_placeholders() + T.IMG_END)
    assert len(turn.image_features) == 1 and turn.image_features.shape[1:] == (64, 16)
    n_views = len(conv.features)
    first_len = len(conv.ids)
    turn2, conv = pipe.chat("And now?", conversation=conv, max_new_tokens=70)
    assert len(conv.ids) > first_len and len(conv.features) == n_views and conv.turns == 2
    assert sum(conv.cmp_mask) == 64 * n_views  # generated image spans are not comprehension slots
    before = (list(conv.ids), len(conv.features), conv.turns)
    with pytest.raises(PromptError, match="exceeds the context of 1024"):
        pipe.chat("again", [str(ckpts / "photo.png")], conversation=conv, max_new_tokens=800)
    assert (conv.ids, len(conv.features), conv.turns) == before  # a refused turn changes nothing


def test_a_later_turn_beyond_the_context_ends_the_chat_and_keeps_the_answered_ones(ckpts, tmp_path, capsys):
    rc = run("chat", "--checkpoint", ckpts / "stage1", "--image", ckpts / "photo.png", "--prompt", "What is it?",
             "--prompt", "And then?", "--max-new-tokens", "800", "--out", tmp_path, *FAST)
    assert rc == 0
    record = json.loads((tmp_path / "chat.json").read_text())
    assert len(record["turns"]) == 1 and record["stopped"]["turn"] == 2
    assert "exceeds the context" in record["stopped"]["reason"]
    assert "seedx-jax chat: turn 2: " in capsys.readouterr().err


def test_generate_writes_png_and_is_reproducible(ckpts, tmp_path):
    for name in ("a", "b"):
        assert run("generate", "--checkpoint", ckpts / "stage1", "--prompt", "a red cube", "--out", tmp_path,
                   "--name", name, "--seed", "3", *FAST) == 0
    a, b = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in "ab")
    assert a.shape == (32, 32, 3) and a.std() > 0 and (a == b).all()
    record = json.loads((tmp_path / "a.json").read_text())
    assert record["render"]["steps"] == 2 and record["turns"][0]["generated_images"] == 1


def test_noise_file_fixes_the_image(ckpts, tmp_path):
    noise = tmp_path / "noise.npy"
    np.save(noise, np.random.default_rng(0).normal(size=(1, 16, 16, 4)).astype(np.float32))  # tiny VAE factor 2
    outs = []
    for seed in ("1", "2"):
        assert run("generate", "--checkpoint", ckpts / "stage1", "--prompt", "x", "--noise", noise, "--out",
                   tmp_path, "--name", seed, "--seed", seed, *FAST) == 0
        outs.append(np.asarray(Image.open(tmp_path / f"{seed}.png")))
    assert (outs[0] == outs[1]).all()  # greedy text + the same noise: the seed no longer matters
    np.save(noise, np.zeros((1, 8, 8, 4), np.float32))  # the tiny VAE halves: 32x32 needs 16x16
    assert run("generate", "--checkpoint", ckpts / "stage1", "--prompt", "x", "--noise", noise, "--out",
               tmp_path, "--name", "bad", *FAST) == 2
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "bad.json").exists()


def test_edit_uses_the_stage2_detokenizer(ckpts, tmp_path):
    assert run("edit", "--checkpoint", ckpts / "stage2", "--image", ckpts / "photo.png", "--prompt",
               "make it blue", "--out", tmp_path, *FAST) == 0
    assert np.asarray(Image.open(tmp_path / "edit.png")).shape == (32, 32, 3)
    assert json.loads((tmp_path / "edit.json").read_text())["seed"] == 42
    assert run("edit", "--checkpoint", ckpts / "stage1", "--image", ckpts / "photo.png", "--prompt", "x",
               "--out", tmp_path, "--name", "wrong", *FAST) == 2


def test_reconstruct_batch_skips_bad_images(ckpts, tmp_path, capsys):
    rc = run("reconstruct", "--checkpoint", ckpts / "stage1", "--image", ckpts / "photo.png", "--image",
             ckpts / "broken.png", "--image", ckpts / "photo.png", "--out", tmp_path, *FAST)
    assert rc == 0
    record = json.loads((tmp_path / "reconstruct.json").read_text())
    assert [os.path.basename(p) for p in record["outputs"]] == ["reconstruct-0.png", "reconstruct-2.png"]
    assert len(record["skipped"]) == 1 and "broken.png: not a recognised image file" in record["skipped"][0]
    assert "skipped" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["chat", "--checkpoint", "{missing}", "--prompt", "hi"], "does not exist"),
    (["chat", "--checkpoint", "{photo}", "--prompt", "hi"], "photo.png is a file, not a checkpoint directory"),
    (["chat", "--checkpoint", "{stage1}", "--prompt", "what is <img>?"], "images are passed as images"),
    (["chat", "--checkpoint", "{stage1}", "--prompt", "where is <loc-300>?"], "not a SEED-X token"),
    (["chat", "--checkpoint", "{stage1}", "--prompt", "   "], "question is empty"),
    (["chat", "--checkpoint", "{stage1}", "--prompt", "boxes?", "--grounding"], "grounding needs an image"),
    (["chat", "--checkpoint", "{stage1}", "--image", "{broken}", "--prompt", "hi"], "not a recognised image"),
    (["chat", "--checkpoint", "{tmp}", "--prompt", "hi"], "not a seedx_jax pipeline checkpoint"),
    (["generate", "--checkpoint", "{stage1}", "--prompt", "x", "--height", "30"], "--height 30 must be"),
    (["generate", "--checkpoint", "{stage2}", "--prompt", "x"], "needs a stage-1 de-tokenizer"),
])
def test_bad_input_is_one_line(ckpts, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": ckpts / "nope", "photo": ckpts / "photo.png", "stage1": ckpts / "stage1",
             "stage2": ckpts / "stage2", "broken": ckpts / "broken.png", "tmp": tmp_path / "empty"}
    argv = [a.format(**paths) for a in argv]
    assert main(argv + ["--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"seedx-jax {argv[0]}: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()  # no empty --out left behind


def test_incompatible_checkpoint_parts(ckpts, tmp_path):
    tok = SeedXTokenizer.from_dir(str(ckpts / "stage1" / "tokenizer"))
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(0))
    vit = QwenViT(TINY_VISION.replace(output_dim=32), rngs=nnx.Rngs(0))
    save_pipeline(str(tmp_path / "bad"), tokenizer=tok, vit=vit, agent=agent)
    with pytest.raises(CheckpointError, match="ViT output_dim=32 != agent feature size 16"):
        SeedX.load(str(tmp_path / "bad"))
    assert [p for p in os.listdir(tmp_path) if ".partial" in p] == []  # no partial directories left


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "seedx_jax", "generate", "--help"], capture_output=True, text=True,
                         check=True)
    assert "--noise" in out.stdout and "--guidance-scale" in out.stdout


def test_chat_from_stdin_draws_generated_images(ckpts, tmp_path, monkeypatch, capsys):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("draw a cat\n\nwhat is <img>?\nand a dog\n"))
    assert run("chat", "--checkpoint", ckpts / "stage1", "--out", tmp_path, "--max-new-tokens", "70", *FAST) == 0
    record = json.loads((tmp_path / "chat.json").read_text())
    # blank line skipped; the refused turn is reported and the chat goes on
    assert [t["prompt"] for t in record["turns"]] == ["draw a cat", "and a dog"]
    assert [os.path.basename(p) for p in record["outputs"]] == ["chat-turn0-0.png", "chat-turn2-0.png"]
    assert np.asarray(Image.open(tmp_path / "chat-turn2-0.png")).shape == (32, 32, 3)
    assert "images are passed as images" in capsys.readouterr().err
