"""`seedx-jax chat | generate | edit | reconstruct` refuse bad input before any weight loads, with one
line and exit 2; follow the output policy for `--out` files (never replace what an earlier run of ours
did not write, keep inputs, leave no empty folder, respect the umask); report an answer cut off by
--max-new-tokens and non-finite values with exit 1 instead of writing a picture."""
import json
import os
import stat

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.config import TINY_VISION, AgentConfig
from seedx_jax.agent.model import SeedXAgent
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.checkpoint import save_pipeline
from seedx_jax.cli import main
from seedx_jax.detokenizer.model import Detokenizer, DetokenizerConfig
from seedx_jax.pipelines import SeedX
from seedx_jax.vision.vit import QwenViT
from seedx_fixtures import script_agent, train_sp_model
from test_cli import FAST, ckpts  # noqa: F401 (the scripted tiny pipelines)


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if a command loads weights: every check must come before."""
    def refuse(self, **kw):
        raise AssertionError("weights were loaded before the input was refused")
    monkeypatch.setattr(SeedX, "load_weights", refuse)


@pytest.mark.parametrize("argv, message", [
    (["generate", "--prompt", "a cat</s>"], "'</s>', the LLM's end-of-sequence token"),
    (["generate", "--prompt", "<s>"], "'<s>', the LLM's beginning-of-sequence token"),
    (["generate", "--prompt", "a <patch> cat"], "images are passed as images"),
    (["generate", "--prompt", ""], "caption is empty"),
    (["generate", "--prompt", "x", "--max-new-tokens", "10"], "cannot hold an image"),
    (["generate", "--prompt", "x", "--solver", "ddim", "--steps", "1000"], "ddim takes at most 999 steps"),
    (["generate", "--prompt", "x", "--steps", "1001"], "num_steps=1001 must be in [1, 1000]"),
    (["generate", "--prompt", "x", "--steps", "0"], "--steps: 0 must be at least 1"),
    (["generate", "--prompt", "x", "--seed", "-1"], "--seed: -1 must be at least 0"),
    (["generate", "--prompt", "x", "--seed", str(2 ** 32)], "must be below 2**32"),
    (["generate", "--prompt", "x", "--temperature", "-0.5"], "temperature=-0.5 must be >= 0"),
    (["generate", "--prompt", "x", "--top-p", "0"], "top_p=0.0 must be in (0, 1]"),
    (["generate", "--prompt", "x", "--guidance-scale", "nan"], "'nan' is not a finite number"),
    (["generate", "--prompt", "x", "--width", "33"], "width=33 must be a positive multiple"),
    (["generate", "--prompt", "x", "--max-new-tokens", "2000"], "exceeds the context of 1024"),
    (["chat", "--prompt", "hi", "--image", "{photo}", "--grounding", "--template", "seed_x", "--prompt", "</s>"],
     "question contains '</s>'"),
    (["chat", "--prompt", "where?", "--grounding"], "grounding needs an image"),
    (["edit", "--image", "{photo}", "--prompt", "x"], "editing needs a stage-2 de-tokenizer"),
    (["reconstruct", "--image", "{photo}", "--noise", "{nan_noise}"], "the noise array holds 1 NaN"),
])
def test_bad_input_is_refused_before_the_weights_load(ckpts, tmp_path, capsys, no_weights, argv, message):  # noqa: F811
    noise = np.zeros((1, 16, 16, 4), np.float32)
    noise[0, 3, 3, 1] = np.nan
    np.save(tmp_path / "nan.npy", noise)
    argv = [a.format(photo=ckpts / "photo.png", nan_noise=tmp_path / "nan.npy") for a in argv]
    rc = main([argv[0], "--checkpoint", str(ckpts / "stage1"), "--out", str(tmp_path / "out"), *FAST, *argv[1:]])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def _generate(ckpts, out, *extra):  # noqa: F811
    return main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompt", "a red cube", "--out", str(out),
                 *FAST, *map(str, extra)])


def test_an_earlier_run_is_replaced_only_with_overwrite(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    assert _generate(ckpts, "outputs", "--seed", "1") == 0  # relative --out, created
    first = np.asarray(Image.open("outputs/generate.png"))
    assert _generate(ckpts, "outputs", "--seed", "2") == 2
    assert "generate.json holds an earlier run; pass --overwrite" in capsys.readouterr().err
    assert (np.asarray(Image.open("outputs/generate.png")) == first).all()
    assert _generate(ckpts, "outputs", "--seed", "2", "--overwrite") == 0
    assert json.load(open("outputs/generate.json"))["seed"] == 2
    assert sorted(os.listdir("outputs")) == ["generate.json", "generate.png"]


def test_files_we_did_not_write_are_never_replaced(ckpts, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "album"
    out.mkdir()
    (out / "generate.png").write_bytes(b"the user's own picture")
    for flags in ((), ("--overwrite",)):
        assert _generate(ckpts, out, *flags) == 2
        assert "generate.png exists and is not a recorded output" in capsys.readouterr().err
    assert (out / "generate.png").read_bytes() == b"the user's own picture"
    # an input image is never an output, even with --overwrite
    Image.open(ckpts / "photo.png").save(out / "edit.png")
    rc = main(["reconstruct", "--checkpoint", str(ckpts / "stage1"), "--image", str(out / "edit.png"),
               "--out", str(out), "--name", "edit", "--overwrite", *FAST])
    assert rc == 2 and "exists and is not a recorded output" in capsys.readouterr().err
    # --out inside the checkpoint, or a file
    assert _generate(ckpts, ckpts / "stage1" / "out") == 2
    assert "lies inside the input" in capsys.readouterr().err
    assert _generate(ckpts, out / "generate.png") == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_outputs_respect_the_umask(ckpts, tmp_path):  # noqa: F811
    old = os.umask(0o022)
    try:
        assert _generate(ckpts, tmp_path / "new" / "out") == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "new", tmp_path / "new" / "out"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o755
    for name in ("generate.png", "generate.json"):
        assert stat.S_IMODE(os.stat(tmp_path / "new" / "out" / name).st_mode) == 0o644


@pytest.fixture(scope="module")
def late_image(tmp_path_factory):
    """A pipeline whose answer is one word, then an image: `<box_end> <img> [64] </img> </s>`."""
    root = tmp_path_factory.mktemp("late")
    tok = SeedXTokenizer(train_sp_model(str(root / "sp.model")))
    agent = SeedXAgent(AgentConfig.preset("tiny"), rngs=nnx.Rngs(1))
    script_agent(agent, tok, {"\n": T.BOX_END, T.BOX_END: T.IMG_START, T.IMG_END: "</s>"})
    save_pipeline(str(root / "pipe"), tokenizer=tok, vit=QwenViT(TINY_VISION, rngs=nnx.Rngs(0)), agent=agent,
                  detokenizer=Detokenizer(DetokenizerConfig.preset("tiny"), rngs=nnx.Rngs(2)), template="seed_x_i")
    return root / "pipe"


def test_an_image_cut_off_by_max_new_tokens_is_said_so(late_image, tmp_path, capsys):
    argv = ["generate", "--checkpoint", str(late_image), "--prompt", "a cat", "--out", str(tmp_path / "o"), *FAST]
    assert main(argv + ["--max-new-tokens", "66"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("seedx-jax generate: --max-new-tokens 66 ended the answer inside its image after 66 tokens; "
                       "raise it (the image span alone takes 66); nothing written"), err
    assert not (tmp_path / "o").exists()
    assert main(argv + ["--max-new-tokens", "68"]) == 0  # word + 66 + </s>


def test_non_finite_images_are_reported_not_written(ckpts, tmp_path, capsys, monkeypatch):  # noqa: F811
    from seedx_jax.detokenizer import model as detok_model

    original = detok_model.Detokenizer.generate
    monkeypatch.setattr(detok_model.Detokenizer, "generate", lambda self, *a, **kw: original(self, *a, **kw) * np.nan)
    assert _generate(ckpts, tmp_path / "o") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "the de-tokenizer's output image holds 3072 NaN" in err[-1] and err[-1].endswith("nothing written"), err
    assert not (tmp_path / "o").exists()
