"""`force_image` / `--force-image`: the assistant turn starts with `<img>` (the official demo's "force image
generation"), so a model that answers a question in text answers it with an image. On the scripted tiny
pipeline of test_cli with the base template (`Question: ...\\nAnswer:`), whose greedy answer to a question
is text (`<loc-60><box_end></s>`)."""
import json

import numpy as np
import pytest
from PIL import Image

from seedx_jax import tokens as T
from seedx_jax.agent.prompts import PromptError
from seedx_jax.cli import main
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.pipelines import SeedX
from test_cli import FAST, ckpts  # noqa: F401 (the scripted tiny pipelines)

QUESTION = "What is it?"


@pytest.fixture(scope="module")
def base(ckpts):  # noqa: F811
    return SeedX.load(str(ckpts / "stage1"), template="seed_x")


def test_a_forced_answer_is_an_image_kept_in_the_history(base):
    text, _ = base.chat(QUESTION, max_new_tokens=70)
    assert len(text.image_features) == 0 and T.IMG_END not in text.raw_text  # the unforced answer is text

    turn, conv = base.chat(QUESTION, max_new_tokens=70, force_image=True)
    assert turn.image_features.shape == (1, 64, 16) and np.isfinite(turn.image_features).all()
    assert not turn.cut_off
    span = list(base.forcing.span)  # <img>, the 64 image tokens, </img>
    assert turn.token_ids == span[1:] + [base.tokenizer.eos_id]  # <img> is the prompt's, the rest generated
    assert (turn.raw_text, turn.text) == ("</img>", "")  # as an unforced image answer reads (test_cli)
    assert conv.ids[-66:] == span and not any(conv.cmp_mask)  # history keeps the span; no comprehension slots

    second, conv = base.chat("And now?", conversation=conv, max_new_tokens=70, force_image=True)
    assert second.image_features.shape == (1, 64, 16) and conv.ids.count(span[0]) == 2 and conv.turns == 2
    pixels = base.render(turn.image_features, height=16, width=16, sampler=SamplerConfig(num_steps=2))
    assert pixels.shape == (1, 16, 16, 3) and pixels.dtype == np.uint8 and pixels.std() > 0


def test_max_new_tokens_must_hold_the_rest_of_a_forced_image(base):
    base.prepare_chat(QUESTION, max_new_tokens=1)  # a text answer needs no room for an image
    with pytest.raises(PromptError, match=r"max_new_tokens=64 cannot hold an image: .*\(65 tokens\)"):
        base.prepare_chat(QUESTION, max_new_tokens=64, force_image=True)
    base.prepare_chat(QUESTION, max_new_tokens=65, force_image=True)
    # the base text-to-image prompt ends in <img> already: forcing adds none; the image tokens + </img> suffice
    forced, plain = (base.prepare_generate("a cat", force_image=force, renders=False, max_new_tokens=65).ids
                     for force in (True, False))
    assert forced == plain and plain[-1] == base.forcing.span[0] and plain[-2] != base.forcing.span[0]


def test_an_image_opened_by_the_prompt_and_cut_off_is_said_so(base):
    """`Turn.cut_off` counts the prompt's `<img>`: an answer of image tokens without `</img>` is cut off."""
    prompt = [base.tokenizer.bos_id, *base.prepare_chat(QUESTION, max_new_tokens=70, force_image=True).ids]
    partial = list(base.forcing.span[1:40])
    none = np.zeros((0, 64, 16), np.float32)
    assert base._answer(prompt, partial, none, None, False).cut_off
    assert not base._answer(prompt[:-1], base.tokenizer.encode("a cat"), none, None, False).cut_off


def test_force_image_on_the_command_line(ckpts, tmp_path, capsys):  # noqa: F811
    argv = ["--checkpoint", str(ckpts / "stage1"), "--out", str(tmp_path), *FAST]
    assert main(["chat", "--template", "seed_x", "--prompt", QUESTION, "--max-new-tokens", "70", "--force-image",
                 *argv]) == 0
    record = json.loads((tmp_path / "chat.json").read_text())
    assert record["decoding"]["force_image"] is True and record["turns"][0]["generated_images"] == 1
    assert np.asarray(Image.open(tmp_path / "chat-turn0-0.png")).shape == (32, 32, 3)
    capsys.readouterr()

    assert main(["generate", "--prompt", "a cat", "--force-image", "--max-new-tokens", "64", "--name", "short",
                 *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["seedx-jax generate: error: --max-new-tokens 64 cannot hold an image: the answer starts with "
                   "<img>, then needs 64 image tokens and </img> (65 tokens)"], err
    assert not (tmp_path / "short.json").exists()
