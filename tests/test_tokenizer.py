"""The SEED-X token layout and the 4.30.2 slow-tokenizer rules (docs/tokenizer.md),
on a SentencePiece model trained in the test. Expected ids are written fragment by fragment from
the rules, so a change in splitting or stripping fails here."""
import json

import pytest

from seedx_jax import tokens as T
from seedx_jax.agent import boxes
from seedx_jax.agent.prompts import PromptError, get_template
from seedx_jax.agent.tokenizer import SeedXTokenizer, TokenizerError, released_added_tokens
from seedx_fixtures import SP_VOCAB, train_sp_model


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return SeedXTokenizer(train_sp_model(str(tmp_path_factory.mktemp("sp") / "tokenizer.model")))


def test_added_token_ids_follow_the_released_order(tok):
    assert tok.vocab_size == SP_VOCAB + 330
    b = SP_VOCAB  # 32000 on Llama-2
    assert [tok.token_id(T.image_token(i)) for i in (0, 63, 99)] == [b, b + 63, b + 99]
    assert [tok.token_id(t) for t in (T.IMG_START, T.IMG_END, T.PATCH_START, T.PATCH_END)] == [b + 100, b + 101,
                                                                                               b + 102, b + 103]
    assert [tok.token_id(T.loc_token(k)) for k in (0, 223)] == [b + 104, b + 327]
    assert [tok.token_id(T.BOX_START), tok.token_id(T.BOX_END)] == [b + 328, b + 329]
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
    assert tok.sp.id_to_piece(13) == "<0x0A>" and 13 in tok.encode("a\nb")  # newline as on Llama-2


def test_released_layout_on_llama2_numbers():
    layout = released_added_tokens()
    assert len(layout) == 330 and len(set(layout)) == 330
    ids = {t: 32000 + i for i, t in enumerate(layout)}
    assert ids["<img>"] == 32100 and ids["<loc-0>"] == 32104 and ids["<box_end>"] == 32329


def test_split_strips_whitespace_around_added_tokens(tok):
    assert tok.split("a cat <img> \n on <loc-3>  mat\n") == ["a cat", "<img>", "on", "<loc-3>", "mat\n"]
    # control strings are never split either, but (AddedToken(lstrip=False, rstrip=False) in 4.30.2) strip nothing
    assert tok.split("x</s> y") == ["x", "</s>", " y"]
    assert tok.split("<img> <s> x") == ["<img>", "<s>", " x"]


def test_each_fragment_gets_its_own_dummy_prefix(tok):
    sp = tok.sp.encode
    text = "Question: " + T.anyres_image_text(1) + "What is it?\nAnswer:"
    img = [tok.token_id(t) for t in [T.PATCH_START, *[T.image_token(i) for i in range(64)], T.PATCH_END,
                                     T.IMG_START, *[T.image_token(i) for i in range(64)], T.IMG_END]]
    # "Question: " loses its trailing space; "What is it?..." is encoded alone, with its own "▁".
    assert tok.encode(text, add_bos=True) == [1] + sp("Question:") + img + sp("What is it?\nAnswer:")
    assert len(img) == 132
    assert sp("What is it?") != sp("What is it?")[1:]  # the dummy prefix is really there
    assert tok.encode("a" + T.IMG_START) != sp("a<img>")


@pytest.mark.parametrize("name,kind", [("seed_x", "chat"), ("seed_x_i", "chat"), ("seed_x_edit", "edit"),
                                       ("seed_x_i", "generate"), ("seed_x", "generate"), ("seed_x", "ground")])
def test_prompt_layouts(tok, name, kind):
    sp, t = tok.sp.encode, get_template(name)
    image = T.anyres_image_text(2)
    image_ids = tok.encode(image)
    assert len(image_ids) == 66 * 3
    if kind == "chat":
        ids = tok.encode(t.chat("Describe it.", [image]), add_bos=True)
        prefix = sp("Question:") if name == "seed_x" else sp("[INST]")
        suffix = sp("Describe it.\nAnswer:") if name == "seed_x" else sp("Describe it. [/INST]\n")
        assert ids == [1] + prefix + image_ids + suffix
    elif kind == "edit":
        one = T.anyres_image_text(1)
        ids = tok.encode(t.edit_prompt("Make it red.", one), add_bos=True)
        assert ids == [1] + sp("[INST]") + tok.encode(one) + sp("Make it red. [/INST]\n")
    elif kind == "generate":
        ids = tok.encode(t.generate("a cat"), add_bos=True)
        if name == "seed_x":
            assert ids == [1] + sp("a cat") + [tok.token_id(T.IMG_START)]
        else:
            assert ids == [1] + sp("[INST] Generate an image: a cat [/INST]\n")
    else:
        ids = tok.encode(t.ground("a car", [image]), add_bos=True)
        assert ids == [1] + image_ids + sp("a car [[") + [tok.token_id(T.BOX_START)]


def test_follow_up_turn_newline_is_stripped_after_an_added_token(tok):
    # 4.30.2 strips ALL whitespace next to added tokens: a turn after "</img>" loses its "\n".
    t = get_template("seed_x_i")
    ids = tok.encode(T.IMG_END + t.next_turn("Why?"))
    assert ids == [tok.token_id(T.IMG_END)] + tok.sp.encode("[INST] Why? [/INST]\n")


def test_decode_joins_added_tokens_with_spaces(tok):
    ids = tok.encode("a cat<box_start><loc-1><loc-2><loc-3><loc-4><box_end> sits")
    assert tok.decode(ids) == "a cat <box_start> <loc-1> <loc-2> <loc-3> <loc-4> <box_end> sits"
    # 4.30.2 loads added_tokens.json entries as ordinary added tokens: only <s>, </s>, <unk> are skipped
    assert tok.decode(ids + [tok.eos_id], skip_special_tokens=True) == tok.decode(ids)
    assert tok.decode(tok.encode("a</s>b")) == " a</s>b"  # 4.30.2's spacing around control tokens


def test_save_and_load_folder(tok, tmp_path):
    tok.save(str(tmp_path))
    again = SeedXTokenizer.from_dir(str(tmp_path))
    assert again.added_tokens == tok.added_tokens
    text = "[INST] " + T.anyres_image_text(1) + "hi [/INST]\n"
    assert again.encode(text) == tok.encode(text)


def test_bad_tokenizer_files_are_named(tok, tmp_path):
    with pytest.raises(TokenizerError, match="no SentencePiece model"):
        SeedXTokenizer(str(tmp_path / "missing.model"))
    tok.save(str(tmp_path))
    added = dict(tok.added_tokens)
    del added["<box_end>"]
    (tmp_path / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(TokenizerError, match="lack 1 SEED-X tokens"):
        SeedXTokenizer.from_dir(str(tmp_path))
    added["<box_end>"] = 5000
    (tmp_path / "added_tokens.json").write_text(json.dumps(added))
    with pytest.raises(TokenizerError, match="ids must be"):
        SeedXTokenizer.from_dir(str(tmp_path))


@pytest.mark.parametrize("size", [(640, 480), (37, 1000)])
def test_box_round_trip_within_one_bin(size):
    w, h = size
    for box in [(0, 0, w, h), (10, 20, 30, 400 % h), (w // 3, h // 4, w // 2, h // 2 + 1)]:
        box = (box[0], min(box[1], box[3]), box[2], max(box[1], box[3]))
        text = boxes.box_text(box, size)
        back = boxes.parse_boxes("a " + text + " b", size)[0]
        for got, want, scale in zip(back, box, (w, h, w, h)):
            assert abs(got - want) <= scale / 224 + 1, (box, back)


def test_box_bins_and_parsing_rules():
    assert boxes.box_to_bins((0, 0, 100, 50), (100, 50)) == (112, 112, 223, 223)  # full size clamps to 223
    assert boxes.box_to_bins((0, 0, 100, 50), (100, 50), rounding="round") == (112, 112, 223, 223)
    assert boxes.bins_to_box((112, 112, 112, 112), (224, 448)) == (56, 112, 168, 336)
    text = "<loc-112><loc-112><loc-112><loc-112><box_end> and <box_start><loc-1><box_end>"
    assert boxes.parse_boxes(text, (224, 224), opened=True) == [(56, 56, 168, 168)]  # short span skipped
    assert boxes.parse_boxes(text, (224, 224)) == []
    with pytest.raises(ValueError, match="inside a 10x10 image"):
        boxes.box_text((0, 0, 11, 5), (10, 10))


def test_prompt_errors():
    t = get_template("seed_x_i")
    with pytest.raises(PromptError, match="question is empty"):
        t.chat("  ", [])
    with pytest.raises(PromptError, match="grounding needs an image"):
        t.ground("a car", [])
    with pytest.raises(PromptError, match="no editing prompt"):
        t.edit_prompt("x", T.anyres_image_text(1))
    with pytest.raises(PromptError, match="unknown prompt template"):
        get_template("seed_y")
