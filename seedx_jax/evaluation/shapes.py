"""The shapes world as an evaluation source (a split folder of `seedx_jax.demo.dataset.write_split`, or
the `shapes_world` TFDS dataset), and its in-repo scoring of images by the world's analyser.

Items by task, from each scene's row (`scenes.jsonl`):
- vqa: every question of the comprehension scene, asked bare (as trained), exact match; category: the
  question's kind (colour, count, position, existence);
- grounding: the scene's grounding request; the gold box is the one its answer's location tokens give
  (what the model was trained to say);
- t2i: the caption of the square scene; edit: the square scene and its instruction (scenes without an
  edit have no item); reconstruct: the square scene.

Scoring (GenEval-style, per object of the scene the text describes): its colour is drawn (colour), in
the named 3 x 3 cell (position), with the named shape (object); per image: as many objects as named
(count). Edits: success = every (colour, cell) the edit adds is drawn and every one it removes is gone;
preservation = PSNR to the source outside the boxes of the objects the edit changes.
"""
from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np
from PIL import Image

from seedx_jax.agent.boxes import parse_boxes
from seedx_jax.data.examples import square_crop
from seedx_jax.demo.analyse import analyse, pairs, same_objects
from seedx_jax.demo.dataset import scene_from_record
from seedx_jax.demo.world import Scene, render
from seedx_jax.detokenizer.model import to_uint8
from seedx_jax.evaluation.items import Item

QUESTION_KINDS = (("What colour", "colour"), ("How many", "count"), ("Where is", "position"), ("Is there", "existence"))
TASKS = ("vqa", "grounding", "t2i", "edit", "reconstruct")
TEMPLATES = {"vqa": "{question}", "grounding": "{expression}"}  # asked as trained


def question_kind(question: str) -> str:
    return next((kind for prefix, kind in QUESTION_KINDS if question.startswith(prefix)), "other")


def scene_items(task: str, row: dict, location: str, images: dict[str, Callable[[], Image.Image]]) -> list[Item]:
    """The items of one scene's `row`; `images`: "image" (the comprehension scene), "drawn_image" (square)."""
    i = row["index"]
    if task == "vqa":
        turns = row["questions"]
        return [Item(f"{i}/q{k}", location, q, (images["image"],), answers=(a,), category=question_kind(q),
                     meta={"match": "exact"}) for k, (q, a) in enumerate(zip(turns[::2], turns[1::2]))]
    if task == "grounding":
        if not row["grounding"]:
            return []
        question, answer = row["grounding"]
        size = (row["scene"]["width"], row["scene"]["height"])
        return [Item(f"{i}/g", location, question, (images["image"],), box=parse_boxes(answer, size)[0])]
    if task == "t2i":
        return [Item(str(i), location, row["caption"], meta={"drawn": row["drawn"]})]
    if task == "edit":
        if not row["edit"]:
            return []
        return [Item(str(i), location, row["edit"]["instruction"], (images["drawn_image"],),
                     meta={"drawn": row["drawn"], "target": row["edit"]["target"]})]
    return [Item(str(i), location, "", (images["drawn_image"],), meta={"drawn": row["drawn"]})]


def _rendered(record: dict) -> Callable[[], Image.Image]:
    return lambda: render(scene_from_record(record))


def read_split(task: str, folder: str) -> list[Item]:
    """The items of `task` in a shapes split folder (`scenes.jsonl`); images rendered from the scenes."""
    path = os.path.join(folder, "scenes.jsonl")
    items = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            row = json.loads(line)
            items += scene_items(task, row, f"{path}:{number}",
                                 {"image": _rendered(row["scene"]), "drawn_image": _rendered(row["drawn"])})
    return items


def drawn(record: dict, side: int) -> np.ndarray:
    """A square scene as the de-tokenizer is trained to draw it (uint8 [side, side, 3])."""
    return to_uint8(square_crop(render(scene_from_record(record)), side)[None])[0]


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = diff[mask].mean() if mask is not None else diff.mean()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def _unchanged(source: Scene, target: Scene, side: int) -> np.ndarray:
    """True where neither the source's nor the target's changed objects are (the region to preserve)."""
    keep = np.ones((side, side), bool)
    changed = [o for o in source.objects if o not in target.objects]
    changed += [o for o in target.objects if o not in source.objects]
    for o in changed:
        x0, y0, x1, y1 = o.box(side, side)
        keep[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False
    return keep


def describe(found) -> list[str]:
    return [f"{d.colour} {d.shape} at {d.cell[1]} {d.cell[0]}" for d in found]


def score_t2i(item: Item, image: np.ndarray | None) -> dict:
    """Per object of the caption's scene: colour, position, object hits; count for the image."""
    scene = scene_from_record(item.meta["drawn"])
    found = analyse(image) if image is not None else []
    return {"found": describe(found),
            "colour": [any(d.colour == o.colour for d in found) for o in scene.objects],
            "position": [any(d.colour == o.colour and d.cell == o.cell for d in found) for o in scene.objects],
            "object": [any(d.colour == o.colour and d.shape == o.shape for d in found) for o in scene.objects],
            "count": len(found) == len(scene.objects), "same_objects": same_objects(found, scene)}


def score_edit(item: Item, image: np.ndarray | None, side: int) -> dict:
    source, target = scene_from_record(item.meta["drawn"]), scene_from_record(item.meta["target"])
    found = analyse(image) if image is not None else []
    before, after, seen = pairs(source.objects), pairs(target.objects), pairs(found)
    ok = image is not None and all(seen[k] >= n for k, n in (after - before).items()) and all(
        seen[k] <= after[k] for k in before - after)
    kept = psnr(image, drawn(item.meta["drawn"], side), _unchanged(source, target, side)) if image is not None else None
    return {"found": describe(found), "success": ok, "preservation_psnr": kept}


def score_reconstruction(item: Item, image: np.ndarray, side: int) -> dict:
    scene = scene_from_record(item.meta["drawn"])
    return {"psnr": psnr(image, drawn(item.meta["drawn"], side)), "objects": same_objects(analyse(image), scene)}
