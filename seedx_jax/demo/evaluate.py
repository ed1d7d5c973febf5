"""Scores the trained shapes-world SEED-X on the held-out split through `seedx-jax eval`'s harness
(`seedx_jax.evaluation`): one evaluation folder per task under `<report>/eval/`, the figures renamed
for the report, and report samples made from the predictions. What each figure measures:
`seedx_jax.evaluation.shapes`.

The settings are the ones the demo has always evaluated with: questions and grounding requests decoded
one at a time (24 and 16 new tokens), captions imagined one at a time and drawn 16 to a batch, edits one
at a time, reconstructions in one batch; every noise seed is the demo's seed.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
from PIL import Image

from seedx_jax.evaluation import metrics as M
from seedx_jax.evaluation import shapes
from seedx_jax.evaluation.evaluate import evaluate
from seedx_jax.pipelines import SeedX, draw_boxes


@dataclasses.dataclass
class Sample:
    """One example for the report: the images shown, the prompt, what the model said, the verdict."""
    task: str
    images: list[np.ndarray]  # uint8 [H, W, 3]
    prompt: str
    output: str
    expected: str
    ok: bool


# task -> {the harness's figure: the report's}
FIGURES = {"vqa": {"accuracy": "vqa/accuracy"}, "grounding": {"mean_iou": "grounding/mean_iou",
                                                               "iou_at_0.5": "grounding/iou_at_0.5"},
           "t2i": {k: f"t2i/{k}" for k in ("colour", "position", "object", "count", "images_drawn")},
           "edit": {"success": "edit/success", "preservation_psnr": "edit/preservation_psnr"},
           "reconstruct": {"psnr": "reconstruction/psnr", "objects": "reconstruction/objects"}}


def _settings(task: str, *, side: int, grids, steps: int, guidance: float, seed: int, scenes: int) -> dict:
    draw = dict(height=side, width=side, steps=steps, guidance_scale=guidance, seed=seed)
    return {"vqa": dict(max_new_tokens=24, grids=grids, batch_size=1),
            "grounding": dict(max_new_tokens=16, grids=grids, batch_size=1),
            "t2i": dict(max_new_tokens=96, batch_size=16, decode_batch_size=1, **draw),
            "edit": dict(max_new_tokens=96, batch_size=1, **draw),
            "reconstruct": dict(batch_size=max(scenes, 1), **draw)}[task]


def run_all(pipes: dict[str, tuple[str, SeedX]], data: str, out: str, *, side: int, grids, steps: int,
            guidance: float, seed: int, scenes: int, keep: int) -> tuple[dict, list[Sample]]:
    """Every task on the split folder `data` into `out/<task>` -> (report metrics, report samples).
    `pipes`: "i" and "edit" -> (checkpoint path, the loaded pipeline)."""
    metrics, samples = {}, []
    for task, names in FIGURES.items():
        checkpoint, pipe = pipes["edit" if task == "edit" else "i"]
        folder = os.path.join(out, task)
        result = evaluate(task, checkpoint, data, folder, pipe=pipe, quiet=True,
                          **_settings(task, side=side, grids=tuple(grids), steps=steps, guidance=guidance, seed=seed,
                                      scenes=scenes))
        figures = result["metrics"]
        metrics.update({report: figures.get(name, float("nan")) for name, report in names.items()})
        if task == "vqa":
            metrics.update({f"vqa/{kind}": v for kind, v in figures.get("per_category", {}).items()})
        samples += _samples(task, data, folder, keep, side)
    return {k: float("nan") if v is None else v for k, v in metrics.items()}, samples


def _predictions(folder: str) -> list[dict]:
    with open(os.path.join(folder, "predictions.jsonl")) as f:
        return [json.loads(line) for line in f]


def _samples(task: str, data: str, folder: str, keep: int, side: int) -> list[Sample]:
    """Report samples of the items of the first `keep` scenes."""
    items = {item.id: item for item in shapes.read_split(task, data)}
    out = []
    for p in _predictions(folder):
        item = items[p["id"]]
        if int(p["id"].split("/")[0]) >= keep or "problem" in p:
            continue
        image = lambda key: np.asarray(Image.open(os.path.join(folder, p[key])))  # noqa: E731
        if task == "vqa":
            ok = M.exact_match(p["answer"], item.answers[0])
            out.append(Sample("vqa", [np.asarray(item.image())], item.text, p["answer"], item.answers[0], ok))
        elif task == "grounding":
            truth = tuple(int(v) for v in item.box)
            shown = draw_boxes(draw_boxes(item.image(), [truth], (0, 160, 0)), [p["box"]] if p["box"] else [],
                               (255, 0, 0))
            iou = M.box_iou(p["box"], truth) if p["box"] else 0.0
            out.append(Sample("grounding", [np.asarray(shown)], item.text, p["answer"],
                              f"green: truth; red: the model's box (IoU {iou:.2f})", iou >= 0.5))
        elif task == "t2i":
            shown = [image("image")] if p["image"] else []
            out.append(Sample("text_to_image", shown + [shapes.drawn(item.meta["drawn"], side)], item.text,
                              ", ".join(p["found"]) or "(no image or nothing found)",
                              "left: generated, right: the caption's scene" if shown
                              else "the caption's scene (the model drew no image)", p["same_objects"]))
        elif task == "edit":
            source, target = shapes.drawn(item.meta["drawn"], side), shapes.drawn(item.meta["target"], side)
            shown = [source] + ([image("image")] if p["image"] else []) + [target]
            out.append(Sample("edit", shown, item.text, p["answer"] or "(no image)",
                              "source, edited by the model, the intended target" if p["image"]
                              else "source, the intended target (the model drew no image)", p["success"]))
        else:
            out.append(Sample("reconstruction", [shapes.drawn(item.meta["drawn"], side), image("image")], "", "",
                              "original, reconstruction", p["objects"]))
    return out

