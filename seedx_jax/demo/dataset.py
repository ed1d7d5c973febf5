"""Writes a shapes-world split through the real data path: ArrayRecord shards of SEED-X records
(conversations with QA and grounding about a scene of any size, caption pairs and single-turn edits
of a second, square scene) that the training configs read with `format = "array_record"`, plus
`scenes.jsonl` (both scenes' objects and texts, for scoring).

Scene i of a split is drawn from `random.Random(f"{seed}-{split}-{i}")`, so the same seed writes the
same bytes, and a split's scenes do not depend on how many are written.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import random

from seedx_jax.agent.tokenizer import SeedXTokenizer, train_sentencepiece
from seedx_jax.data.formats import RawRecord, encode_record
from seedx_jax.data.sequences import PromptLists
from seedx_jax.demo import texts
from seedx_jax.demo.world import GENERATION_ASPECTS, Obj, Scene, WorldConfig, render, sample_scene
from seedx_jax.outputs import atomic_output, write_marker

FILES = {"vqa": "conversations.array_record", "caption": "captions.array_record", "edit": "edits.array_record"}


def png(scene: Scene) -> bytes:
    buf = io.BytesIO()
    render(scene).save(buf, "PNG")
    return buf.getvalue()


def scene_record(scene: Scene) -> dict:
    return {"width": scene.width, "height": scene.height, "background": scene.background,
            "objects": [dataclasses.asdict(o) for o in scene.objects]}


def scene_from_record(record: dict) -> Scene:
    return Scene(record["width"], record["height"], record["background"], tuple(Obj(**o) for o in record["objects"]))


def read_scenes(split_dir: str) -> list[dict]:
    """The rows of `split_dir/scenes.jsonl` with their scenes (`scene`, `drawn`, `edit.target`) as `Scene`s."""
    rows = []
    with open(os.path.join(split_dir, "scenes.jsonl")) as f:
        for line in f:
            row = json.loads(line)
            row["scene"], row["drawn"] = scene_from_record(row["scene"]), scene_from_record(row["drawn"])
            if row["edit"]:
                row["edit"]["target"] = scene_from_record(row["edit"]["target"])
            rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class SceneExample:
    """Scene `row["index"]` of a split: its `scenes.jsonl` row and its three images as PNG bytes."""

    row: dict  # keys index, scene, questions, grounding, drawn, caption, edit (as scenes.jsonl)
    image: bytes  # the comprehension scene, any size
    drawn: bytes  # the square scene of the caption and the edit's source
    target: bytes | None  # the edit's target; None when the scene has no edit

    @property
    def turns(self) -> list[str]:
        """The conversation of the scene's comprehension record: its QA turns, then the grounding pair."""
        return self.row["questions"] + list(self.row["grounding"] or [])


def scene_example(seed: int, split: str, i: int, cfg: WorldConfig = WorldConfig()) -> SceneExample:
    """Scene i of `split`, drawn from `random.Random(f"{seed}-{split}-{i}")`."""
    rng = random.Random(f"{seed}-{split}-{i}")
    scene = sample_scene(rng, cfg)  # any size: comprehension (any-res)
    drawn = sample_scene(rng, cfg, GENERATION_ASPECTS)  # square: captions and edits
    turns = [t for qa in texts.questions(scene, rng) for t in qa]
    ground = texts.grounding(scene, rng)
    edited = texts.edit(drawn, rng, cfg)
    row = {"index": i, "scene": scene_record(scene), "questions": turns, "grounding": ground and list(ground),
           "drawn": scene_record(drawn), "caption": texts.caption(drawn),
           "edit": edited and {"instruction": edited[0], "target": scene_record(edited[1])}}
    return SceneExample(row, png(scene), png(drawn), png(edited[1]) if edited else None)


def write_split(out: str, *, seed: int, split: str, scenes: int, cfg: WorldConfig = WorldConfig()) -> dict:
    """Writes `out/` (atomically); returns the record counts per kind."""
    from array_record.python.array_record_module import ArrayRecordWriter

    counts = {kind: 0 for kind in FILES}
    with atomic_output(out, "shapes_split", name="split folder") as tmp:
        writers = {kind: ArrayRecordWriter(os.path.join(tmp, name), "group_size:1") for kind, name in FILES.items()}
        with open(os.path.join(tmp, "scenes.jsonl"), "w") as index:
            for i in range(scenes):
                example, location = scene_example(seed, split, i, cfg), f"shapes:{split}:{i}"
                records = [RawRecord("vqa", location, {"data": example.turns}, {"image": example.image}),
                           RawRecord("caption", location, {"caption": example.row["caption"]},
                                     {"image": example.drawn})]
                if example.target is not None:
                    records.append(RawRecord("edit", location, {"instruction": example.row["edit"]["instruction"]},
                                             {"source_image": example.drawn, "target_image": example.target}))
                for record in records:
                    writers[record.kind].write(encode_record(record))
                    counts[record.kind] += 1
                index.write(json.dumps(example.row) + "\n")
        for writer in writers.values():
            writer.close()
        with open(os.path.join(tmp, "split.json"), "w") as f:
            json.dump({"seed": seed, "split": split, "scenes": scenes, "records": counts,
                       "world": dataclasses.asdict(cfg)}, f, indent=1)
        write_marker(tmp, "shapes_split", split=split)
    return counts


def world_sentences(seed: int, scenes: int, cfg: WorldConfig = WorldConfig()) -> list[str]:
    """Every kind of text the world produces for `scenes` scenes, plus the prompt templates."""
    prompts = PromptLists()
    sentences = ["[INST] ", " [/INST]\n", *(p + " " + r for p, r in prompts.generation), *prompts.edit_responses]
    for i in range(scenes):
        rng = random.Random(f"{seed}-vocab-{i}")
        scene = sample_scene(rng, cfg)
        sentences += [texts.caption(scene), *(t for qa in texts.questions(scene, rng) for t in qa)]
        ground, edited = texts.grounding(scene, rng), texts.edit(scene, rng, cfg)
        sentences += [ground[0]] if ground else []
        sentences += [edited[0]] if edited else []
    return sentences


def write_tokenizer(out: str, *, seed: int, scenes: int = 300, vocab_size: int = 400) -> SeedXTokenizer:
    """A SentencePiece model of the world's texts + SEED-X's 330 added tokens, saved at `out`."""
    with atomic_output(out, "tokenizer", name="tokenizer folder") as tmp:
        model = train_sentencepiece(os.path.join(tmp, "sp.model"), world_sentences(seed, scenes) * 5, vocab_size)
        SeedXTokenizer(model).save(tmp)
        os.remove(model)
        write_marker(tmp, "tokenizer", source=f"shapes world, seed {seed}")
    return SeedXTokenizer.from_dir(out)
