"""The shapes world (issue 8, first part): seeded scenes, an analyser that reads renders back, the
texts (captions, QA, boxes, edits) and the ArrayRecord split that the training data path reads."""
import json
import random

import numpy as np
import pytest

from seedx_jax.agent.boxes import parse_boxes
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.data.examples import ExampleBuilder, ExampleSpec, Skip
from seedx_jax.data.formats import open_source
from seedx_jax.demo import texts
from seedx_jax.demo.analyse import analyse, matches
from seedx_jax.demo.dataset import FILES, write_split
from seedx_jax.demo.world import render, sample_scene
from seedx_fixtures import train_sp_model


def test_the_analyser_reads_rendered_scenes():
    rng = random.Random(1)
    scenes = [sample_scene(rng) for _ in range(200)]
    score = np.mean([matches(s, analyse(render(s))) for s in scenes])
    assert score >= 0.99, score
    assert {o.shape for s in scenes for o in s.objects} == {"circle", "square", "triangle", "star"}
    assert len({(s.width, s.height) for s in scenes}) >= 5 and {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    # it can fail: a scene with one object swapped for another colour does not match
    s = next(s for s in scenes if s.objects)
    wrong = s.replace(objects=(s.objects[0].__class__(s.objects[0].shape, "purple" if s.objects[0].colour != "purple"
                                                       else "red", *[getattr(s.objects[0], k) for k in ("cx", "cy", "size")]),
                               ) + s.objects[1:])
    assert not matches(wrong, analyse(render(s)))


def test_edits_do_what_they_say():
    rng = random.Random(2)
    seen = set()
    for _ in range(120):
        scene = sample_scene(rng)
        edited = texts.edit(scene, rng)
        if edited is None:
            continue
        instruction, target = edited
        before, after = analyse(render(scene)), analyse(render(target))
        assert matches(target, after), instruction
        kind = instruction.split()[0]
        seen.add(kind)
        if kind == "Add":
            assert len(after) == len(before) + 1
        elif kind == "Remove":
            assert len(after) == len(before) - 1
        elif kind == "Make":
            assert sorted(d.colour for d in after) != sorted(d.colour for d in before)
        else:
            assert kind == "Move"
            colour, shape = instruction.split()[2:4]

            def cell(found):
                (d,) = [d for d in found if (d.colour, d.shape) == (colour, shape)]
                return d.cell

            assert cell(after) != cell(before) and " ".join(cell(after)[::-1]) in instruction.replace("the center",
                                                                                                        "middle center")
    assert seen == {"Add", "Remove", "Make", "Move"}


def test_grounding_answers_decode_to_the_object():
    rng = random.Random(3)
    for _ in range(30):
        scene = sample_scene(rng)
        question, answer = texts.grounding(scene, rng) or (None, None)
        if question is None:
            continue
        (box,) = parse_boxes(answer, (scene.width, scene.height))
        target = next(o for o in scene.objects if question == f"Find the {o.colour} {o.shape}.")
        x0, y0, x1, y1 = target.box(scene.width, scene.height)
        assert abs(box[0] - x0) <= 3 and abs(box[1] - y0) <= 3 and abs(box[2] - x1) <= 3 and abs(box[3] - y1) <= 3


def test_a_split_is_deterministic_and_reads_through_the_training_path(tmp_path):
    counts = write_split(str(tmp_path / "a"), seed=7, split="train", scenes=12)
    write_split(str(tmp_path / "b"), seed=7, split="train", scenes=12)
    write_split(str(tmp_path / "c"), seed=8, split="train", scenes=12)
    for name in (*FILES.values(), "scenes.jsonl"):
        same = (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        other = (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()
        assert same and not other, name
    assert counts["vqa"] == counts["caption"] == 12 and counts["edit"] >= 10
    tok = SeedXTokenizer(train_sp_model(str(tmp_path / "sp.model")))
    specs = {"vqa": ExampleSpec("vqa", max_length=900, view_size=224, max_views=9,
                                grids=("1x1", "1x2", "2x1", "2x2", "1x3", "3x1")),
             "caption": ExampleSpec("t2i", max_length=320, view_size=224),
             "edit": ExampleSpec("edit", max_length=320, view_size=224)}
    for kind, name in FILES.items():
        reader = open_source("array_record", [str(tmp_path / "a" / name)])
        rows = [ExampleBuilder(specs[kind], tok)(reader[i], i) for i in range(len(reader))]
        assert not [r for r in rows if isinstance(r, Skip)], kind
    scenes = [json.loads(x) for x in (tmp_path / "a" / "scenes.jsonl").read_text().splitlines()]
    assert [s["index"] for s in scenes] == list(range(12))


@pytest.mark.parametrize("seed", [0, 1])
def test_captions_and_questions_name_what_is_there(seed):
    rng = random.Random(seed)
    scene = sample_scene(rng)
    cap = texts.caption(scene)
    assert all(f"{o.colour} {o.shape}" in cap for o in scene.objects) and scene.background in cap
    for question, answer in texts.questions(scene, rng):
        if question.startswith("How many"):
            shape = question.split()[2][:-1]
            n = sum(o.shape == shape for o in scene.objects)
            assert texts.NUMBERS[n] in answer


def test_world_tokenizer_covers_the_world_texts(tmp_path):
    from seedx_jax.demo.dataset import world_sentences, write_tokenizer

    tok = write_tokenizer(str(tmp_path / "tok"), seed=0, scenes=100)
    assert tok.vocab_size == tok.sp.get_piece_size() + 330 and tok.sp.get_piece_size() <= 400
    held_out = world_sentences(seed=1, scenes=30)  # other scenes: the same words
    for text in held_out:
        ids = tok.encode(text)
        assert tok.unk_id not in ids and tok.decode(ids) == text, text
    assert sum(len(tok.encode(t)) for t in held_out) < sum(len(t.encode()) for t in held_out) / 3  # not bytes
