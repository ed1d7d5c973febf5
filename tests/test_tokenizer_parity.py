"""`SeedXTokenizer` against the real transformers 4.30.2 slow `LlamaTokenizer` (the version the official
SEED-X code pins), from a recorded reference: tests/fixtures/tokenizer_4_30_2/.

The fixture holds a small SentencePiece model in Llama-2's layout (`tokenizer.model`, committed so the
ids stay valid whatever sentencepiece version trains models later) and `reference.json`: for every string
of `generate_corpus()`, 4.30.2's `encode(s, add_special_tokens=False)` and its `decode(ids)` /
`decode(ids, skip_special_tokens=True)`, plus both decodes of `generate_decode_sequences()` (random mixes
of pieces, control ids and added ids). make_reference.py wrote it with 4.30.2 loading the folder that
`SeedXTokenizer.save` writes (tokenizer.model + added_tokens.json, as the released folder has them).

No transformers here: this runs in the default suite. The generators live in this module (pure Python,
seeded) so make_reference.py and the tests build the same inputs; a change to the prompt templates or the
token strings changes the corpus, and the first test then asks for the reference to be regenerated.
"""
import functools
import hashlib
import json
import os
import random

from seedx_jax import tokens as T
from seedx_jax.agent.prompts import get_template
from seedx_jax.agent.tokenizer import SP_MODEL_FILE, SeedXTokenizer, released_added_tokens

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "tokenizer_4_30_2")
REFERENCE_FILE = os.path.join(FIXTURE_DIR, "reference.json")
CONTROL = ["<s>", "</s>", "<unk>"]
CORPUS_SEED, DECODE_SEED = 430, 2

# Whitespace around split tokens: spaces, tabs, newlines, and the other characters `str.strip` removes
# (no-break / ideographic / thin space, vertical tab, form feed, NEL, line separator).
WHITESPACE = ["", " ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\n ", "\t\n  ", "\r\n", "\xa0", "\u3000",
              "\x0b\x0c", " \u2009", "\x85", "\u2028"]
TEXTS = [
    "a", "a cat", "The quick brown fox jumps over the lazy dog.", "Question:", "Answer:", "[INST]", "[/INST]",
    "Describe the image in detail.", "What is in the picture?", "there are 3 dogs and 12 birds",
    "It costs $4.99 (or 5,000 yen) - 100% sure!", "3.14159", "2024-04-22", "x=1; y=[2, 3]; z={'k': \"v\"}",
    "Hello,\nworld!", "line one\n\nline two\n", "tab\tseparated\tvalues", "  leading and trailing  ",
    "[[", "]]", "<", ">", "_", "-", "img", "loc", "café naïve Ünïcödé", "日本語のテキスト", "emoji 😀🎉",
    "ß Σ ω ж", "e\u0301", "zero\u200bwidth", "a\x00b", "▁", "▁▁a ▁", "<0x0A>", "Windows\r\nline",
]
# Strings that look like split tokens but are not, or hold them oddly (the trie split's edge cases).
LOOKALIKES = [
    "<img", "img>", "<img_0000>", "<img_000000>", "<img_100>", "<loc-224>", "<loc-01>", "<loc--1>", "<IMG>",
    "< img>", "<box_start", "box_end>", "<s", "s>", "</ s>", "<S>", "<<img>>", "<loc-1<loc-2>>", "<im<img>g>",
    "</im</img>", "<img_0<img_00001>", "<pat<patch>", "<</s>>", "<s></s><unk>", "<loc-22<loc-223>3>",
    "<img_00063></img><img>", "a<unk>b", "<s>\n[INST]", " ▁ <img> ▁ ", "<box_start>[[<box_end>",
]


def _special_tokens() -> list[str]:
    return released_added_tokens() + CONTROL


def generate_corpus() -> list[str]:
    """The encode corpus (deterministic): every added token (released order) and `<s>`, `</s>`, `<unk>`
    with whitespace before / after / both / neither and text on both sides / one side / none; random
    mixes; edge cases (empty, whitespace only, adjacent tokens, look-alikes, bytes outside the
    vocabulary); and the SEED-X prompt layouts of every template."""
    rng = random.Random(CORPUS_SEED)
    ws = lambda: rng.choice(WHITESPACE[1:])  # noqa: E731 - some whitespace
    text = lambda: rng.choice(TEXTS)  # noqa: E731
    corpus = []
    # 1. every special token, cycling whitespace placement (k % 4) and neighbouring text (k // 4 % 4).
    for k, tok in enumerate(_special_tokens()):
        before, after = [("", ""), (ws(), ""), ("", ws()), (ws(), ws())][k % 4]
        left, right = [(text(), text()), (text(), ""), ("", text()), ("", "")][k // 4 % 4]
        corpus.append(left + before + tok + after + right)
    # 2. random mixes: text, tokens, runs of adjacent tokens, any whitespace between.
    specials = _special_tokens()
    for _ in range(120):
        parts = [rng.choice(["", ws()])]
        for _ in range(rng.randint(1, 10)):
            r = rng.random()
            if r < 0.4:
                parts.append(text())
            elif r < 0.5:
                parts.append(rng.choice(LOOKALIKES))
            elif r < 0.65:
                parts.append("".join(rng.choice(specials) for _ in range(rng.randint(2, 5))))
            else:
                parts.append(rng.choice(specials))
            parts.append(rng.choice(["", "", ws()]))
        corpus.append("".join(parts))
    # 3. edge cases.
    corpus += ["", " ", "   ", "\n", "\t", "\n\n \t", "a", " a", "a ", "  a  b  ", "<img>", " <img> ",
               "<img><img>", "<img> <img>", "<img>\n\n<img>", "\t<img>\t", "<s>", " <s> ", "<s><s>", "</s> </s>",
               "<unk>", " <unk>\n", "<s> <img> </s>", "a <s> <img> b", "<img> <s> x", "x </s><img> y",
               "".join(specials), " ".join(specials), "\n".join(specials[-10:])]
    corpus += LOOKALIKES + TEXTS
    # 4. the SEED-X prompts (templates of seedx_jax.agent.prompts, any-res image text of seedx_jax.tokens).
    img1, img2 = T.anyres_image_text(1), T.anyres_image_text(2)
    box = T.BOX_START + "".join(T.loc_token(k) for k in (12, 40, 100, 7)) + T.BOX_END
    gen = T.IMG_START + T.image_placeholders() + T.IMG_END
    for name in ("seed_x", "seed_x_i", "seed_x_edit"):
        t = get_template(name)
        corpus += [
            t.chat("What is in the picture?", [img1]), t.chat("Describe the image in detail.", [img2]),
            t.chat("Compare them.", [img1, img1]), t.chat("Hello there!", []),
            t.chat("  What is it?  \n", [img1]), t.chat("\nWhy?\n", []),
            t.ground("In the background with a blue sky on the road, there is a car", [img1]),
            t.generate("a cat sitting on a blue sofa"), t.generate(" a red car \n"),
            t.next_turn("Where is it?"), t.next_turn("And this one?", [img1]),
            "<s>" + t.chat("What is it?", [img1]) + "A red car.</s>",
            t.chat("Find the car.", [img1]) + box + t.next_turn("Draw it bigger.") + "Here it is: " + gen
            + "</s>",
            t.generate("a mountain lake at sunset") + T.image_placeholders() + T.IMG_END + "\n</s>",
        ]
        if t.edit is not None:
            corpus += [t.edit_prompt("Make the car red.", img1), t.edit_prompt(" add a hat ", img1) + gen]
    return corpus


def generate_decode_sequences(sp_size: int) -> list[list[int]]:
    """Id sequences to decode (deterministic): random mixes of SentencePiece pieces (byte pieces
    included), control ids 0-2 and the 330 added ids, plus a few fixed ones."""
    rng = random.Random(DECODE_SEED)
    base, n_added = sp_size, len(released_added_tokens())
    fixed = [[], [0], [1], [2], [1, 2], [base], [1, base, 2], [base, 1], [1, 1, 2, 2], [3, 1, 3, 2, 3],
             [base + 100, 13, base + 101], [13, 13, 1, 13], [0, 0, base + 5, 0]]
    seqs = []
    for _ in range(240):
        seq = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.5:
                seq.append(rng.randrange(3, sp_size))
            elif r < 0.65:
                seq.append(rng.randrange(3))
            else:
                seq.append(base + rng.randrange(n_added))
        seqs.append(seq)
    return fixed + seqs


# -- the tests ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _reference() -> dict:
    with open(REFERENCE_FILE) as f:
        return json.load(f)


@functools.lru_cache(maxsize=None)
def _tokenizer() -> SeedXTokenizer:
    return SeedXTokenizer(os.path.join(FIXTURE_DIR, SP_MODEL_FILE))


def _first_mismatch(what: str, cases, ours, name: str) -> str | None:
    bad = [(case, got) for case, got in zip(cases, ours) if got != case[name]]
    if not bad:
        return None
    case, got = bad[0]
    return (f"{len(bad)} of {len(cases)} {what} differ from transformers 4.30.2; first:\n"
            f"  input:   {case.get('text', case['ids'])!r}\n  4.30.2:  {case[name]!r}\n  ours:    {got!r}")


def test_fixture_is_this_model_and_corpus():
    ref = _reference()
    with open(os.path.join(FIXTURE_DIR, SP_MODEL_FILE), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == ref["header"]["tokenizer_model_sha256"]
    tok = _tokenizer()
    assert ref["header"]["vocab_size"] == tok.vocab_size == tok.sp.get_piece_size() + 330
    stale = "regenerate it: see the docstring of tests/fixtures/tokenizer_4_30_2/make_reference.py"
    assert [c["text"] for c in ref["encode"]] == generate_corpus(), "the corpus changed; " + stale
    assert [c["ids"] for c in ref["decode"]] == generate_decode_sequences(tok.sp.get_piece_size()), stale
    corpus = "".join(generate_corpus())
    assert all(t in corpus for t in _special_tokens())  # every split token is exercised
    assert tok.sp.id_to_piece(13) == "<0x0A>" and (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)


def test_encode_matches_transformers_4_30_2():
    cases, tok = _reference()["encode"], _tokenizer()
    problem = _first_mismatch("encodings", cases, [tok.encode(c["text"]) for c in cases], "ids")
    if problem:
        raise AssertionError(problem)


def test_decode_matches_transformers_4_30_2():
    tok = _tokenizer()
    for group in ("encode", "decode"):
        cases = _reference()[group]
        for name, skip in (("decode", False), ("decode_skip", True)):
            got = [tok.decode(c["ids"], skip_special_tokens=skip) for c in cases]
            problem = _first_mismatch(f"decodes (skip_special_tokens={skip}) of the {group} ids", cases, got, name)
            if problem:
                raise AssertionError(problem)
