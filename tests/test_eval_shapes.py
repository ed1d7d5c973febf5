"""The shapes world through the evaluation harness: its scorers against oracle and wrong outputs (they
read the outputs, they do not echo the targets), and its items read alike from a split folder and
from the `shapes_world` TFDS dataset."""
import json
import os

import numpy as np
import pytest

from seedx_jax.agent.boxes import parse_boxes
from seedx_jax.demo.dataset import write_split
from seedx_jax.evaluation import shapes
from seedx_jax.evaluation.image_tasks import Edit, TextToImage
from seedx_jax.evaluation.tasks import VQA, Grounding

SIDE = 32


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("world") / "test")
    write_split(out, seed=3, split="test", scenes=40)
    return out


def test_comprehension_scores_of_an_oracle_and_of_a_wrong_model(split):
    """Right answers and the answer's own boxes score 1; "There are five." and no box score ~0 / 0."""
    items = {i.id: i for i in shapes.read_split("vqa", split)}
    right = [{"id": i, "answer": item.answers[0]} for i, item in items.items()]
    wrong = [{"id": i, "answer": "There are five."} for i in items]
    assert VQA().score(items, right)["accuracy"] == 1.0
    assert VQA().score(items, wrong)["accuracy"] < 0.2
    assert set(VQA().score(items, right)["per_category"]) == {"colour", "count", "existence", "position"}
    ground = {i.id: i for i in shapes.read_split("grounding", split)}
    boxes = [{"id": i, "box": list(item.box)} for i, item in ground.items()]
    assert Grounding().score(ground, boxes)["mean_iou"] == 1.0
    assert Grounding().score(ground, [{"id": i, "box": None} for i in ground])["mean_iou"] == 0.0


def test_image_scores_of_an_oracle_and_of_a_wrong_model(split):
    """The caption's scene drawn at 32 px scores >= 0.95 colour (the analyser's ceiling), a blank square 0;
    the intended edit succeeds with high preservation, the untouched source fails."""
    t2i = shapes.read_split("t2i", split)
    good = [dict(id=i.id, image="x", **shapes.score_t2i(i, shapes.drawn(i.meta["drawn"], SIDE))) for i in t2i]
    bad = [dict(id=i.id, image="x", **shapes.score_t2i(i, np.full((SIDE, SIDE, 3), 250, np.uint8))) for i in t2i]
    by_id = {i.id: i for i in t2i}
    m_good, m_bad = TextToImage().score(by_id, good), TextToImage().score(by_id, bad)
    assert m_good["colour"] >= 0.95 and m_good["position"] >= 0.9, m_good
    assert m_bad["colour"] == 0.0 and m_bad["position"] == 0.0 and m_bad["count"] == 0.0
    edits = shapes.read_split("edit", split)
    good = [dict(id=i.id, image="x", **shapes.score_edit(i, shapes.drawn(i.meta["target"], SIDE), SIDE)) for i in edits]
    bad = [dict(id=i.id, image="x", **shapes.score_edit(i, shapes.drawn(i.meta["drawn"], SIDE), SIDE)) for i in edits]
    by_id = {i.id: i for i in edits}
    e_good, e_bad = Edit().score(by_id, good), Edit().score(by_id, bad)
    assert e_good["success"] >= 0.9 and e_good["preservation_psnr"] > 60, e_good
    assert e_bad["success"] <= 0.1, e_bad


def test_grounding_gold_is_the_box_the_answer_says(split):
    """What the model was trained to say: the answer's location tokens, on the comprehension scene."""
    with open(os.path.join(split, "scenes.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    for item in shapes.read_split("grounding", split)[:5]:
        row = rows[int(item.id.split("/")[0])]
        size = (row["scene"]["width"], row["scene"]["height"])
        assert item.image().size == size and item.box == parse_boxes(row["grounding"][1], size)[0]


def test_the_tfds_shapes_world_gives_the_split_folders_items(tmp_path):
    """`tfds:shapes_world:test` (seedx_jax.demo.tfds_builder) and the split folder of the same seed: the
    same items for every task, images equal pixel for pixel."""
    from seedx_jax.demo.tfds_builder import prepare
    from seedx_jax.evaluation.data import open_data

    prepare(str(tmp_path / "tfds"), seed=5, train_scenes=1, test_scenes=4)
    write_split(str(tmp_path / "split"), seed=5, split="test", scenes=4)
    for task in shapes.TASKS:
        folder = open_data(task, str(tmp_path / "split")).items
        tfds = open_data(task, "tfds:shapes_world:test", tfds_data_dir=str(tmp_path / "tfds")).items
        assert len(folder) == len(tfds) > 0
        for a, b in zip(folder, tfds):
            assert (a.id, a.text, a.answers, a.category, a.box, a.meta) == (b.id, b.text, b.answers, b.category,
                                                                            b.box, b.meta)
            if a.images:
                assert np.array_equal(np.asarray(a.image()), np.asarray(b.image()))
