"""Text in training data follows the rule for typed text at inference (`check_user_text`): a sample whose
question, answer, caption or edit instruction types an image-structure or control token (which would
shift every image slot of its row) is skipped and reported with its location and reason; box and
location tokens, as grounding answers hold them, stay allowed."""
import json

import numpy as np
import pytest

import train_fixtures as F
from configs.train_common import TINY_GRIDS
from seedx_jax.data.examples import ExampleBuilder, ExampleSpec, Skip
from seedx_jax.data.formats import open_source
from seedx_jax.data.pipeline import ExampleStream
from seedx_jax.losses import IGNORE_INDEX
from test_train_data import data, tok  # noqa: F401 (the shared fixtures)

VIEW = 224
VQA = ExampleSpec("vqa", max_length=480, view_size=VIEW, max_views=3, grids=TINY_GRIDS)
BOX = "<box_start><loc-10><loc-20><loc-100><loc-120><box_end>"


def conversation(image, *turns):
    return json.dumps({"image": image, "data": list(turns)})


BAD = {  # line -> (sample, what its skip reason says)
    2: (conversation("/green.png", "What is in <img> this?", "A green block."),
        "data[0] (the question) contains '<img>'"),
    3: (conversation("/blue.png", "What colour?", "Blue.</s> And more."),
        "data[1] (the answer) contains '</s>'"),
    4: (conversation("/red.png", "Colour?", "Red.", "And <img_00003>?", "Still red."),
        "data[2] (the question) contains '<img_00003>'"),
    5: (conversation("/red.png", "A <patch> here?", "No."), "data[0] (the question) contains '<patch>'"),
    6: (conversation("/red.png", "Colour?", " "), "data[1] (the answer) is empty"),
    7: (json.dumps({"data": ["", "No image, no question."]}), "data[0] (the question) is empty"),
}
GOOD = {  # line -> (sample, its answer)
    1: (conversation("/red.png", "What colour is the block?", "The block is red."), "The block is red."),
    8: (conversation("/blue.png", "Where is the block?", BOX), BOX),  # grounding: box tokens are answers
    9: (conversation("/yellow.png", "", "A yellow block."), "A yellow block."),  # the image is the question
}


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory):
    lines = {**{k: v[0] for k, v in BAD.items()}, **{k: v[0] for k, v in GOOD.items()}}
    path = tmp_path_factory.mktemp("text") / "conv.jsonl"
    path.write_text("".join(lines[i] + "\n" for i in sorted(lines)))
    return str(path)


def test_typed_structure_and_control_tokens_skip_the_sample(data, tok, jsonl):
    reader = open_source("llava_jsonl", [jsonl], data["image_dir"])
    built = {i + 1: ExampleBuilder(VQA, tok)(reader[i], i) for i in range(len(reader))}
    for line, (_, reason) in BAD.items():
        assert isinstance(built[line], Skip), line
        assert built[line].location == f"{jsonl}:{line}" and built[line].reason.startswith(reason), built[line]
    for line, (_, answer) in GOOD.items():
        labels = built[line]["labels"]
        assert labels[labels != IGNORE_INDEX].tolist() == tok.encode(answer) + [tok.eos_id], line


def test_the_stream_counts_and_reports_them(data, tok, jsonl):
    reports = []
    stream = ExampleStream("conv", open_source("llava_jsonl", [jsonl], data["image_dir"]), ExampleBuilder(VQA, tok),
                           seed=0, per_process=len(GOOD), report=lambda name, skip: reports.append(skip))
    first, second = stream.next_batch(len(GOOD)), stream.next_batch(len(GOOD))  # the second crosses an epoch
    assert {s.location for s in reports} == {f"{jsonl}:{line}" for line in BAD}
    assert stream.stats.skipped == len(reports) and stream.stats.examples == 2 * len(GOOD)
    assert np.isin(first["input_ids"], tok.encode("<img>")).any()  # rows of the good samples, images in place
    assert second["input_ids"].shape == first["input_ids"].shape


def test_captions_and_edit_instructions_follow_the_same_rule(data, tok, tmp_path):
    tar = F.write_tar(str(tmp_path / "t.tar"), data["images"][:1], data["image_dir"],
                      [("x.jpg", open(f"{data['image_dir']}/green.png", "rb").read()), ("x.txt", b"a <patch> block")])
    t2i = ExampleBuilder(ExampleSpec("t2i", max_length=224, view_size=VIEW), tok)
    reader = open_source("webdataset", [tar])
    good, bad = (t2i(reader[i], i) for i in range(2))
    assert not isinstance(good, Skip)
    assert bad.location == f"{tar}:x" and bad.reason.startswith("the caption contains '<patch>'"), bad

    lines = [json.dumps({"source_image": "red.png", "target_image": "blue.png", "instruction": "make it <img_00001>"}),
             json.dumps({"source_image": "red.png", "target_image": "blue.png", "instruction": "make it blue",
                         "response": "Done<s>"}),
             json.dumps({"source_image": "red.png", "target_image": "blue.png", "instruction": ""}),
             json.dumps({"source_image": "red.png", "target_image": "blue.png", "instruction": "make it blue",
                         "response": ""})]
    path = F.write_edit_jsonl(str(tmp_path / "edit.jsonl"), [], lines)
    edit = ExampleBuilder(ExampleSpec("edit", max_length=256, view_size=VIEW), tok)
    reader = open_source("edit_jsonl", [path], data["image_dir"])
    results = [edit(reader[i], i) for i in range(len(reader))]
    reasons = ["the instruction contains '<img_00001>'", "the response contains '<s>'", "the instruction is empty"]
    for line, (result, reason) in enumerate(zip(results, reasons), 1):
        assert result.location == f"{path}:{line}" and result.reason.startswith(reason), result
    assert not isinstance(results[3], Skip)  # an empty response is one of SEED-X's own
