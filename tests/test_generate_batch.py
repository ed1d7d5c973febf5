"""Batched text-to-image: `SeedX.generate_images` and `seedx-jax generate --prompts-file`, on the scripted tiny
pipeline of test_cli (every caption is answered with an image). An image is (caption, k, seed): it does
not change with the batch size or the other captions, image k is `generate_image(caption, seed=seed + k)`,
and every batch of a run has one shape (short batches padded with copies)."""
import json
import os
import re

import numpy as np
import pytest
from flax import nnx

from seedx_jax.agent.generate import AgentGenerator
from seedx_jax.agent.prompts import PromptError
from seedx_jax.cli import main
from seedx_jax.detokenizer.model import Detokenizer
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.llama.generate import Sampling
from seedx_jax.pipelines import SeedX
from test_cli import FAST, ckpts  # noqa: F401 (the scripted tiny pipelines)

CAPTIONS = ["a red cube", "a cat sitting on a blue sofa", "a mountain lake at sunset"]
KW = dict(height=32, width=32, sampler=SamplerConfig(num_steps=2))  # FAST's: the compiled programs are shared


@pytest.fixture(scope="module")
def pipe(ckpts):  # noqa: F811
    return SeedX.load(str(ckpts / "stage1"))


@pytest.fixture
def shapes(monkeypatch):
    """The batch shapes the LLM and the de-tokenizer were called with, in order."""
    seen = {"decode": [], "render": []}
    decode, render = AgentGenerator.__call__, Detokenizer.generate

    def spy_decode(self, prompt_ids, **kw):
        seen["decode"].append(np.shape(prompt_ids))
        return decode(self, prompt_ids, **kw)

    def spy_render(self, features, negative, **kw):
        seen["render"].append(np.shape(features)[0])
        return render(self, features, negative, **kw)

    monkeypatch.setattr(AgentGenerator, "__call__", spy_decode)
    monkeypatch.setattr(Detokenizer, "generate", spy_render)
    return seen


def _pixels(results):
    return [[(image.index, image.seed, image.pixels) for image in result.images] for result in results]


def test_an_image_depends_on_its_caption_index_and_seed_only(pipe, shapes):
    one, three = (pipe.generate_images(CAPTIONS, num_images_per_prompt=2, batch_size=b, seed=5, **KW) for b in (1, 3))
    alone = pipe.generate_images(CAPTIONS[1:2], num_images_per_prompt=2, batch_size=3, seed=5, **KW)
    # one program per batch shape: 3 captions in rows of 1, then of 3; one caption padded to 3 rows
    assert shapes["decode"] == [(1, 64)] * 3 + [(3, 64)] * 2 and set(shapes["render"]) == {1}
    for a, b in zip(_pixels(one), _pixels(three)):
        assert [(k, s) for k, s, _ in a] == [(k, s) for k, s, _ in b] == [(0, 5), (1, 6)]
        assert all(np.array_equal(x, y) for (*_, x), (*_, y) in zip(a, b))
    assert all(np.array_equal(x, y) for (*_, x), (*_, y) in zip(_pixels(alone)[0], _pixels(three)[1]))
    first, second = (p for *_, p in _pixels(three)[0])
    assert first.shape == (32, 32, 3) and first.std() > 0 and not np.array_equal(first, second)  # own noise
    assert [len(r.turns) for r in three] == [1, 1, 1] and three[0].turns[0].image_features.shape == (1, 64, 16)


def test_image_k_is_generate_image_with_seed_plus_k(pipe):
    (result,) = pipe.generate_images(["a cat"], num_images_per_prompt=2, batch_size=1, seed=7, **KW)
    turn, pixels = pipe.generate_image("a cat", seed=8, **KW)
    assert result.images[1].seed == 8 and np.array_equal(result.images[1].pixels, pixels)
    np.testing.assert_array_equal(result.turns[0].image_features, turn.image_features)


def test_sampling_decodes_a_row_per_image(pipe, shapes):
    kw = dict(num_images_per_prompt=2, batch_size=3, sampling=Sampling(temperature=0.7), seed=1, **KW)
    (result,) = pipe.generate_images(["a cat"], **kw)
    assert shapes["decode"] == [(3, 64)] and len(result.turns) == 2  # 2 rows, padded to 3
    assert [image.index for image in result.images] == [0, 1]
    (again,) = pipe.generate_images(["a cat"], **kw)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(result.images, again.images))


def test_each_caption_gets_its_own_answer(pipe):
    """With attention mixing the prompt in (the scripted model's answer ignores it), captions get
    different features, each its own whatever its batch."""
    graph, state = nnx.split(pipe.agent)
    rng = np.random.default_rng(0)
    mixed = nnx.merge(graph, nnx.map_state(
        lambda path, x: x + rng.normal(size=x.shape).astype(x.dtype) * 0.05 if "o_proj" in str(path) else x, state))
    model = SeedX(pipe.tokenizer, pipe.vit, mixed, pipe.detokenizer)
    results = model.generate_images(CAPTIONS, batch_size=3, force_image=True, **KW)
    alone = [model.imagine(caption, force_image=True).image_features for caption in CAPTIONS]
    for result, features in zip(results, alone):
        np.testing.assert_allclose(result.turns[0].image_features, features, rtol=1e-5, atol=1e-6)
    assert np.abs(alone[0] - alone[1]).max() > 1e-3


@pytest.mark.parametrize("captions, options, message", [
    ("a cat", {}, "captions is one string"),
    ([], {}, "captions is empty"),
    (["a cat"], {"num_images_per_prompt": 0}, "num_images_per_prompt=0 must be a positive integer"),
    (["a cat"], {"batch_size": True}, "batch_size=True must be a positive integer"),
    (["a cat", "what is <img>?"], {}, "captions[1]: caption contains '<img>'"),
    (["a cat"], {"max_new_tokens": 65}, "max_new_tokens=65 cannot hold an image"),
])
def test_bad_arguments_are_refused_before_any_model_runs(ckpts, captions, options, message):  # noqa: F811
    opened = SeedX.open(str(ckpts / "stage1"))  # no weights: every check comes first
    with pytest.raises(PromptError if "captions[" in message else ValueError, match=re.escape(message)):
        opened.generate_images(captions, **options, **KW)


def _write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def cat_in_text(ckpts, monkeypatch):  # noqa: F811
    """A model that answers "a cat" in text: the rows of that prompt are replaced by `no </s>` -> its tokens."""
    opened = SeedX.open(str(ckpts / "stage1"))
    cat = np.asarray([opened.tokenizer.bos_id, *opened.prepare_generate("a cat", renders=False).ids])
    text = [*opened.tokenizer.encode("no"), opened.tokenizer.eos_id]
    decode = AgentGenerator.__call__

    def answer(self, prompt_ids, **kw):
        out = decode(self, prompt_ids, **kw)
        tokens, counts = out.tokens.copy(), out.num_tokens.copy()
        for row, ids in enumerate(np.asarray(prompt_ids)):
            if np.array_equal(ids[:len(cat)], cat) and ids[len(cat)] == 0:  # right padding follows
                tokens[row, :len(text)], counts[row] = text, len(text)
                out.image_features[row] = out.image_features[row][:0]
        return out._replace(tokens=tokens, num_tokens=counts)

    monkeypatch.setattr(AgentGenerator, "__call__", answer)
    return text


def test_prompts_file_writes_each_caption_s_images_and_reports_the_rest(ckpts, tmp_path, capsys, cat_in_text,  # noqa: F811
                                                                         shapes):
    prompts = _write(tmp_path / "captions.txt", f"{CAPTIONS[0]}\n\n  what is <img>?\n{'dog ' * 1000}\n"
                                                f"\u00e9t\u00e9 {CAPTIONS[1]}  \na cat\n")
    out = tmp_path / "out"
    assert main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompts-file", prompts, "--out", str(out),
                 "--num-images-per-prompt", "2", "--batch-size", "3", "--render-batch-size", "3", "--seed", "5",
                 *FAST]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"{prompts}:3: caption contains '<img>': images are passed as images, not typed as tokens" in err
    assert any(line.startswith(f"{prompts}:4: prompt has ") and "exceeds the context" in line for line in err)
    assert (f"{prompts}:6: the model answered without an image ({len(cat_in_text)} tokens: 'no'); --force-image "
            "makes it draw") in err
    assert shapes == {"decode": [(3, 64)], "render": [3, 3]}  # 4 images: 3 + 1 and 2 copies
    record = json.loads((out / "generate.json").read_text())
    captions = record["captions"]
    assert [(c["line"], c["prompt"]) for c in captions] == [(1, CAPTIONS[0]), (5, f"été {CAPTIONS[1]}"), (6, "a cat")]
    assert [[i["seed"] for i in c["images"]] for c in captions] == [[5, 6], [5, 6], []]
    assert captions[2]["answers"][0]["raw_text"] == "no" and len(record["skipped"]) == 2
    assert (record["num_images_per_prompt"], record["batch_size"], record["render_batch_size"]) == (2, 3, 3)
    names = ["generate-0001-0.png", "generate-0001-1.png", "generate-0005-0.png", "generate-0005-1.png"]
    assert sorted(os.listdir(out)) == names + ["generate.json"]
    assert [os.path.basename(p) for p in record["outputs"]] == names


def test_a_prompts_file_whose_captions_all_drew_no_image_writes_nothing(ckpts, tmp_path, capsys,  # noqa: F811
                                                                          cat_in_text):
    only_cat = _write(tmp_path / "cat.txt", "a cat\n")
    assert main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompts-file", only_cat, "--out",
                 str(tmp_path / "none"), *FAST]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"seedx-jax generate: no caption of --prompts-file {only_cat} was answered with an image "
                       "(see above); nothing written") and not (tmp_path / "none").exists()


@pytest.mark.parametrize("content, options, message", [
    ("\n  \n", [], "--prompts-file {file}: no usable caption (it has no non-blank line)"),
    ("<img>\n\n</s>\n", [], "--prompts-file {file}: no usable caption (2 line(s) refused, the first: {file}:1: "
                            "caption contains '<img>'"),
    (b"\xff\n\n", [], "--prompts-file {file}: no usable caption (1 line(s) refused, the first: {file}:1: not UTF-8 "
                      "text)"),
    ("a cat\n", ["--noise", "{file}"], "--noise goes with --prompt"),
    ("a cat\n", ["--max-new-tokens", "10"], "--max-new-tokens 10 cannot hold an image"),
])
def test_a_prompts_file_without_a_usable_caption_is_one_line(ckpts, tmp_path, capsys, content, options,  # noqa: F811
                                                               message):
    path = tmp_path / "captions.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    np.save(tmp_path / "captions.npy", np.zeros((1, 16, 16, 4), np.float32))
    options = [o.format(file=tmp_path / "captions.npy") for o in options]
    assert main(["generate", "--checkpoint", str(ckpts / "stage1"), "--prompts-file", str(path), *options,
                 "--out", str(tmp_path / "out"), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("seedx-jax generate: error: ") and message.format(file=path) in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (["--prompt", "a cat", "--batch-size", "2"], "--batch-size goes with --prompts-file"),
    (["--prompt", "a cat", "--prompts-file", "x.txt"], "argument --prompts-file: not allowed with argument --prompt"),
    ([], "one of the arguments --prompt --prompts-file is required"),
    (["--prompts-file", "x.txt", "--num-images-per-prompt", "0"], "--num-images-per-prompt: 0 must be at least 1"),
])
def test_prompt_and_prompts_file_options(ckpts, tmp_path, capsys, argv, message):  # noqa: F811
    assert main(["generate", "--checkpoint", str(ckpts / "stage1"), *argv, "--out", str(tmp_path), *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
