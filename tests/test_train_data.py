"""Training data (issue 7): every official format read from fixtures written here, labels masked as
the official builders token by token, ArrayRecord shards from `prepare` giving the same examples, bad samples
skipped with their location, and the data order/iterator state the resume and multi-host runs rely on."""
import dataclasses
import json
import os

import numpy as np
import pytest

import train_fixtures as F
from configs.train_common import TINY_GRIDS
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.data.examples import ExampleBuilder, ExampleSpec, Skip, example_shapes
from seedx_jax.data.formats import open_source
from seedx_jax.data.pipeline import ExampleStream, GlobalOrder, Mixture, SourceSpec
from seedx_jax.data.prepare import main as prepare_main
from seedx_jax.losses import IGNORE_INDEX
from seedx_jax.tokens import IMG_START
from seedx_jax.vision.anyres import EDIT_GRIDS, process_anyres
from seedx_jax.vision.image_io import load_image

VIEW = 224
SPECS = {"llava_jsonl": ExampleSpec("vqa", max_length=480, view_size=VIEW, max_views=3, grids=TINY_GRIDS),
         "webdataset": ExampleSpec("t2i", max_length=224, view_size=VIEW),
         "edit_jsonl": ExampleSpec("edit", max_length=256, view_size=VIEW)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return F.write_all(str(tmp_path_factory.mktemp("train_data")))


@pytest.fixture(scope="module")
def tok(data):
    return SeedXTokenizer.from_dir(data["tokenizer"])


def _reader(data, fmt):
    return open_source(fmt, [{"llava_jsonl": data["llava"], "edit_jsonl": data["edit"], "webdataset": data["tar"]}[fmt]],
                       data["image_dir"])


def _trained(ex):
    return ex["labels"][ex["labels"] != IGNORE_INDEX].tolist()


def test_llava_conversation_row(data, tok):
    ex = ExampleBuilder(SPECS["llava_jsonl"], tok)(_reader(data, "llava_jsonl")[0], 0)
    ids, labels = ex["input_ids"], ex["labels"]
    answer = tok.encode("The block is red.")
    trained = np.flatnonzero(labels != IGNORE_INDEX)
    # only the answer and the final EOS are trained, and they are the last real tokens
    assert _trained(ex) == answer + [tok.eos_id]
    assert trained.tolist() == list(range(trained[0], trained[0] + len(answer) + 1))
    assert trained[-1] == ex["attention_mask"].sum() - 1
    assert tok.decode(ids[trained[0] - 10:trained[0]]).endswith("[/INST]\n")
    # the 448x200 image: any-res (2 tiles + global) views in the row's slots, 64 placeholders each
    anyres = process_anyres(load_image(os.path.join(data["image_dir"], "red.png")), TINY_GRIDS, base=VIEW)
    views = int(ex["cmp_valid"].sum())
    assert views == anyres.num_views == 3 and ex["ids_cmp_mask"].sum() == 64 * views
    np.testing.assert_array_equal(ex["cmp_pixels"][:views], anyres.pixels)
    np.testing.assert_array_equal(ex["cmp_positions"][:views], anyres.positions)
    assert not ex["ids_gen_mask"].any() and ex["gen_pixels"].shape[0] == 0


def test_webdataset_text_to_image_row(data, tok):
    ex = ExampleBuilder(SPECS["webdataset"], tok)(_reader(data, "webdataset")[1], 0)
    assert _trained(ex) == [tok.token_id(IMG_START), tok.eos_id]  # <img> and EOS only
    real = ex["input_ids"][:ex["attention_mask"].sum()]
    assert "a green block on grey [/INST]\n" in tok.decode(real)
    gen = np.flatnonzero(ex["ids_gen_mask"])
    assert len(gen) == 64 and real[gen[0] - 1] == tok.token_id(IMG_START)
    image = load_image(os.path.join(data["image_dir"], "green.png"))
    np.testing.assert_array_equal(ex["gen_pixels"][0], process_anyres(image, EDIT_GRIDS, base=VIEW).pixels[1])
    assert ex["gen_valid"].tolist() == [True] and not ex["cmp_valid"].any()
    # too long for generation: the image-first captioning fallback trains the caption + EOS
    short = dataclasses.replace(SPECS["webdataset"], max_length=160)
    ex = ExampleBuilder(short, tok)(_reader(data, "webdataset")[1], 0)
    assert _trained(ex) == tok.encode("a green block on grey") + [tok.eos_id]
    assert ex["cmp_valid"].tolist() == [True, True] and not ex["gen_valid"].any() and ex["ids_cmp_mask"].sum() == 128


def test_edit_row(data, tok):
    ex = ExampleBuilder(SPECS["edit_jsonl"], tok)(_reader(data, "edit_jsonl")[0], 3)
    trained = _trained(ex)
    assert trained[-2:] == [tok.token_id(IMG_START), tok.eos_id]
    assert tok.decode(trained[:-2]).strip() in ("Here is the edited image.", "")  # a polite response
    assert ex["ids_cmp_mask"].sum() == 128 and ex["ids_gen_mask"].sum() == 64
    src = process_anyres(load_image(os.path.join(data["image_dir"], "red.png")), EDIT_GRIDS, base=VIEW)
    tgt = process_anyres(load_image(os.path.join(data["image_dir"], "green.png")), EDIT_GRIDS, base=VIEW)
    np.testing.assert_array_equal(ex["cmp_pixels"], src.pixels)
    np.testing.assert_array_equal(ex["gen_pixels"][0], tgt.pixels[1])
    assert "make the red block green" in tok.decode(ex["input_ids"])


@pytest.mark.parametrize("fmt,task", [("llava_jsonl", "vqa"), ("webdataset", "t2i"), ("edit_jsonl", "edit"),
                                      ("webdataset", "detok_image"), ("edit_jsonl", "detok_edit")])
def test_example_shapes_are_what_the_builder_yields(data, tok, fmt, task):
    """The preflight compiles the step from `example_shapes` alone, without data: it must not drift."""
    spec = dataclasses.replace(SPECS[fmt], task=task, resolution=32)
    ex = ExampleBuilder(spec, tok)(_reader(data, fmt)[1], 0)
    assert {k: (v.shape, v.dtype) for k, v in ex.items()} == example_shapes(spec)


@pytest.mark.parametrize("fmt", ["llava_jsonl", "webdataset", "edit_jsonl"])
def test_prepared_array_records_give_the_same_examples(data, tok, tmp_path, fmt):
    raw = _reader(data, fmt)
    out = tmp_path / "shards"
    src = {"llava_jsonl": data["llava"], "edit_jsonl": data["edit"], "webdataset": data["tar"]}[fmt]
    assert prepare_main(["--format", fmt, "--paths", src, "--image-dir", data["image_dir"], "--out", str(out),
                         "--records-per-shard", "3"]) == 0
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["records"] == len(raw) == 4 and len(summary["shards"]) == 2
    prepared = open_source("array_record", sorted(str(p) for p in out.glob("*.array_record")))
    build = ExampleBuilder(SPECS[fmt], tok)
    for i in range(len(raw)):
        a, b = build(raw[i], i), build(prepared[i], i)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{fmt} record {i} {k}")


def test_bad_samples_are_skipped_with_their_location(data, tok, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    lines = ["{not json", json.dumps({"image": "gone.png", "data": ["q?", "a."]}),
             json.dumps({"image": str(tmp_path / "broken.png"), "data": ["q?", "a."]}),
             json.dumps({"image": "red.png", "data": ["only a question"]}),
             json.dumps({"image": "red.png", "data": ["q?", "a very long answer " * 60]})]
    path = F.write_llava_jsonl(str(tmp_path / "bad.jsonl"), [], lines)
    reader = open_source("llava_jsonl", [path], data["image_dir"])
    spec = ExampleSpec("vqa", max_length=400, view_size=VIEW, max_views=3, grids=TINY_GRIDS)
    results = [ExampleBuilder(spec, tok)(reader[i], i) for i in range(len(reader))]
    assert all(isinstance(r, Skip) for r in results[:4])
    reasons = [(r.location, r.reason) for r in results[:4]]
    assert reasons[0][0] == f"{path}:1" and "malformed line" in reasons[0][1]
    assert reasons[1][0] == f"{path}:2" and "gone.png: no such file" in reasons[1][1]
    assert reasons[2][0] == f"{path}:3" and "broken.png" in reasons[2][1]
    assert "user/assistant pairs" in reasons[3][1]
    # too long: truncated (VQA keeps the image), never an error
    assert results[4]["attention_mask"].sum() == 400
    # prepare drops what it can see (JSON, image files) and says where
    out = tmp_path / "prepared"
    assert prepare_main(["--format", "llava_jsonl", "--paths", path, "--image-dir", data["image_dir"],
                         "--out", str(out)]) == 0
    summary = json.loads((out / "prepare.json").read_text())
    assert summary["records"] == 2 and summary["skipped"] == 3
    assert [s.split(": ")[0] for s in summary["skipped_items"]] == [f"{path}:{i}" for i in (1, 2, 3)]
    # an edit too long for max_length is dropped, not truncated; a tar sample without image is skipped
    edit = ExampleBuilder(ExampleSpec("edit", max_length=150, view_size=VIEW), tok)(_reader(data, "edit_jsonl")[0], 0)
    assert isinstance(edit, Skip) and ">= max_length 150" in edit.reason
    tar = F.write_tar(str(tmp_path / "t.tar"), [], data["image_dir"], [("x.txt", b"caption only")])
    skip = ExampleBuilder(SPECS["webdataset"], tok)(open_source("webdataset", [tar])[0], 0)
    assert isinstance(skip, Skip) and skip.location == f"{tar}:x" and "no image" in skip.reason


def test_a_file_that_is_not_json_lines_or_a_folder_is_refused_whole(data, tmp_path):
    """A photo or a folder given as a jsonl path: refused when the source opens (before any model is
    built), not read as hundreds of skipped lines; one malformed line among good ones is skipped (above)."""
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=rf"^{photo}: not a JSON-lines file \(none of its first \d lines is a JSON"):
        open_source("llava_jsonl", [str(photo)], data["image_dir"])
    with pytest.raises(ValueError, match=f"^{tmp_path}: a folder, not a jsonl file$"):
        open_source("edit_jsonl", [str(tmp_path)], data["image_dir"])


def test_global_order_does_not_depend_on_the_process_count():
    n, per_global = 10, 4
    single = GlobalOrder(n, 7, 0, 1, per_global)
    split = [GlobalOrder(n, 7, p, 2, per_global // 2) for p in range(2)]
    for batch in range(6):  # crosses epochs
        want = [single(batch * per_global + i)[1] for i in range(per_global)]
        got = [o(batch * 2 + i)[1] for o in split for i in range(2)]
        assert got == want
    epoch0 = [single(i)[1] for i in range(n)]
    epoch1 = [single(n + i)[1] for i in range(n)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n)) and epoch0 != epoch1


class _Numbers:
    """A reader whose record i is "i"; every 5th is bad."""

    def __len__(self):
        return 13

    def __getitem__(self, i):
        return i


def _build(i, seed):
    return Skip(f"n:{i}", "multiple of 5") if i % 5 == 0 else {"x": np.asarray([i, seed % 1000])}


def _mixture(skips):
    streams = [ExampleStream(name, _Numbers(), _build, seed=3, per_process=2, report=lambda n, s: skips.append(s))
               for name in ("a", "b")]
    return Mixture(streams, [SourceSpec("a", 0.7, 2), SourceSpec("b", 0.3, 2)], seed=3, accumulation=2)


def test_mixture_state_restores_the_exact_continuation():
    skips = []
    first = _mixture(skips)
    for step in range(3):
        first.batch_for(step)
    state = first.get_state()
    want = [first.batch_for(step) for step in range(3, 6)]
    assert skips and all(s.reason == "multiple of 5" for s in skips)
    resumed = _mixture([])
    resumed.set_state(state)
    got = [resumed.batch_for(step) for step in range(3, 6)]
    for (name_a, a), (name_b, b) in zip(want, got):
        assert name_a == name_b
        np.testing.assert_array_equal(a["x"], b["x"])
    assert {n: s.skipped for n, s in resumed.stats().items()} == {n: s.skipped for n, s in first.stats().items()}
    assert {name for name, _ in want} <= {"a", "b"} and want[0][1]["x"].shape == (2, 2, 2)
