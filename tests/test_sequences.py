"""SEED-X training sequences (docs/training_recipe.md), token by token: ids, labels, masks of one example per
builder, written out here from the rules (not from the builders' code), plus truncation and drops."""
import numpy as np
import pytest

from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.agent.prompts import get_template
from seedx_jax.data.sequences import PromptLists, SequenceError, edit_sequence, t2i_sequence, vqa_sequence
from seedx_jax.tokens import IMG_END, IMG_START, PATCH_END, PATCH_START, image_token
from seedx_jax.tokens import anyres_image_text as anyres
from seedx_fixtures import train_sp_model

X = -100


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return SeedXTokenizer(train_sp_model(str(tmp_path_factory.mktemp("sp") / "sp.model")))


def image_ids(tok):
    return [tok.token_id(image_token(i)) for i in range(64)]


def check(seq, tok, ids, labels, cmp, gen, max_length):
    n = len(ids)
    np.testing.assert_array_equal(seq.input_ids, ids + [tok.pad_id] * (max_length - n))
    np.testing.assert_array_equal(seq.labels, labels + [X] * (max_length - n))
    np.testing.assert_array_equal(seq.attention_mask, np.arange(max_length) < n)
    np.testing.assert_array_equal(np.flatnonzero(seq.ids_cmp_mask), cmp)
    np.testing.assert_array_equal(np.flatnonzero(seq.ids_gen_mask), gen)


def test_text_to_image(tok):
    text = tok.encode("[INST] Generate an image: a red car [/INST]\n Here is a picture.")
    ids = [tok.bos_id] + text + [tok.token_id(IMG_START)] + image_ids(tok) + [tok.token_id(IMG_END), tok.eos_id]
    labels = [X] * (1 + len(text)) + [tok.token_id(IMG_START)] + [X] * 65 + [tok.eos_id]
    seq = t2i_sequence(tok, "  a red car", prompt_index=1, max_length=200)
    check(seq, tok, ids, labels, [], list(range(2 + len(text), 2 + len(text) + 64)), 200)
    assert seq.embeds_gen_mask.tolist() == [False, True] and seq.embeds_cmp_mask.tolist() == [False, False]
    # too long to generate: image-first captioning, caption and EOS trained, both views comprehension
    cap = t2i_sequence(tok, "a red car", prompt_index=1, max_length=145)
    image = tok.encode(anyres(1))
    caption = tok.encode("a red car")
    cmp = [1 + i for i, t in enumerate(image) if t in image_ids(tok)]
    check(cap, tok, [tok.bos_id] + image + caption + [tok.eos_id], [X] * (1 + len(image)) + caption + [tok.eos_id],
          cmp, [], 145)
    assert cap.embeds_cmp_mask.tolist() == [True, True]
    with pytest.raises(SequenceError, match="image alone"):
        t2i_sequence(tok, "a red car", prompt_index=1, max_length=100)
    # a prompt without a response: `<img>` right after the inference prompt (the seed_x_i template's)
    bare = t2i_sequence(tok, "a red car", prompt_index=0, max_length=200,
                        prompts=PromptLists(generation=(("Generate an image:", ""),)))
    prompt = tok.encode(get_template("seed_x_i").generate("a red car"))
    assert bare.input_ids[:len(prompt) + 2].tolist() == [tok.bos_id] + prompt + [tok.token_id(IMG_START)]
    assert bare.labels[len(prompt)].item() == X and bare.labels[len(prompt) + 1] == tok.token_id(IMG_START)


def test_edit(tok):
    user = tok.encode("[INST] " + anyres(1) + "make it blue [/INST]\n")
    answer = tok.encode("Done.")
    ids = ([tok.bos_id] + user + answer + [tok.token_id(IMG_START)] + image_ids(tok)
           + [tok.token_id(IMG_END), tok.eos_id])
    labels = [X] * (1 + len(user)) + answer + [tok.token_id(IMG_START)] + [X] * 65 + [tok.eos_id]
    placeholders = set(image_ids(tok))
    cmp = [1 + i for i, t in enumerate(user) if t in placeholders]
    start = 1 + len(user) + len(answer) + 1
    seq = edit_sequence(tok, "make it blue", response="Done.", max_length=320, image_first=True)
    check(seq, tok, ids, labels, cmp, list(range(start, start + 64)), 320)
    assert len(cmp) == 128 and seq.embeds_gen_mask.tolist() == [False, False, False, True]
    with pytest.raises(SequenceError, match=">= max_length"):  # dropped, never truncated
        edit_sequence(tok, "make it blue", response="Done.", max_length=len(ids), image_first=True)


def test_multi_turn_vqa(tok):
    first = tok.encode("[INST] What is this?" + anyres(2) + " [/INST]\n")
    a1, follow, a2 = tok.encode("A car."), tok.encode("\n[INST] Color? [/INST]\n"), tok.encode("Red.")
    ids = [tok.bos_id] + first + a1 + follow + a2 + [tok.eos_id]
    labels = [X] * (1 + len(first)) + a1 + [X] * len(follow) + a2 + [tok.eos_id]
    placeholders = set(image_ids(tok))
    cmp = [1 + i for i, t in enumerate(first) if t in placeholders]
    seq = vqa_sequence(tok, ["What is this?", "A car.", "Color?", "Red."], num_tiles=2, max_length=300,
                       image_first=False)
    check(seq, tok, ids, labels, cmp, [], 300)
    assert len(cmp) == 3 * 64 and seq.embeds_cmp_mask.tolist() == [True] * 3
    # truncated when the image fits but the answers do not (the EOS is cut off)
    short = vqa_sequence(tok, ["What is this?", "A car.", "Color?", "Red."], num_tiles=2, max_length=len(ids) - 2,
                         image_first=False)
    np.testing.assert_array_equal(short.labels, labels[:len(ids) - 2])
    assert short.attention_mask.all()
    close = 1 + next(i for i, t in enumerate(first) if t == tok.token_id(IMG_END))
    with pytest.raises(SequenceError, match="image ends"):
        vqa_sequence(tok, ["What is this?", "A car."], num_tiles=2, max_length=close, image_first=False)
    assert tok.token_id(PATCH_START) in first and tok.token_id(PATCH_END) in first
