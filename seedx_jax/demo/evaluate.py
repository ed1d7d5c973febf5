"""Scores a trained shapes-world SEED-X on held-out scenes, every answer read by `analyse` or parsed
from the model's text - nothing is compared with a value computed the same way:

- VQA: exact answers (case and spacing ignored), per kind: colour, count, position, existence;
- grounding: IoU of the first generated box with the object's box (no box: IoU 0);
- text-to-image (GenEval-style, per object of the caption): the colour is drawn (colour), in the named
  3 x 3 cell (position), with the named shape (object); per image: as many objects as named (count);
- editing: success = every (colour, cell) the edit adds is drawn and every one it takes away is gone;
  preservation = PSNR to the source outside the boxes of the objects the edit changes;
- reconstruction (stage 1, the ViT's `vit_down` features): PSNR, and whether the (colour, cell) of
  every object comes back.
"""
from __future__ import annotations

import collections
import dataclasses

import jax.numpy as jnp
import numpy as np

from seedx_jax.agent.boxes import parse_boxes
from seedx_jax.data.examples import square_crop
from seedx_jax.demo.analyse import analyse, pairs, same_objects
from seedx_jax.demo.world import Scene, render
from seedx_jax.detokenizer.model import negative_features, to_uint8
from seedx_jax.diffusion.sampling import SamplerConfig
from seedx_jax.pipelines import SeedX, draw_boxes
from seedx_jax.progress import Progress
from seedx_jax.vision.anyres import image_transform
from seedx_jax.vision.features import vit_down

QUESTION_KINDS = (("What colour", "colour"), ("How many", "count"), ("Where is", "position"), ("Is there", "existence"))


@dataclasses.dataclass
class Sample:
    """One example for the report: the images shown, the prompt, what the model said, the verdict."""
    task: str
    images: list[np.ndarray]  # uint8 [H, W, 3]
    prompt: str
    output: str
    expected: str
    ok: bool


def _norm(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


def _kind(question: str) -> str:
    return next(kind for prefix, kind in QUESTION_KINDS if question.startswith(prefix))


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    diff = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = diff[mask].mean() if mask is not None else diff.mean()
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def _drawn(scene: Scene, side: int) -> np.ndarray:
    """A square scene as the de-tokenizer is trained to draw it (uint8 [side, side, 3])."""
    return to_uint8(square_crop(render(scene), side)[None])[0]


def comprehension(pipe: SeedX, rows: list[dict], grids, progress: Progress, keep: int) -> tuple[dict, list[Sample]]:
    """VQA accuracy (all and per kind) and grounding IoU on each row's comprehension scene."""
    correct, ious, samples = collections.defaultdict(list), [], []
    for r, row in enumerate(rows):
        scene: Scene = row["scene"]
        image = render(scene)
        turns = row["questions"]
        for question, answer in zip(turns[::2], turns[1::2]):
            turn, _ = pipe.chat(question, [image], grids=grids, max_new_tokens=24)
            ok = _norm(turn.text) == _norm(answer)
            correct[_kind(question)].append(ok)
            if r < keep:
                samples.append(Sample("vqa", [np.asarray(image)], question, turn.text, answer, ok))
        if row["grounding"]:
            question, answer = row["grounding"]
            turn, _ = pipe.chat(question, [image], grids=grids, max_new_tokens=16)
            truth = parse_boxes(answer, image.size)[0]
            iou = _iou(turn.boxes[0], truth) if turn.boxes else 0.0
            ious.append(iou)
            if r < keep:
                shown = draw_boxes(draw_boxes(image, [truth], (0, 160, 0)), turn.boxes[:1], (255, 0, 0))
                samples.append(Sample("grounding", [np.asarray(shown)], question, turn.raw_text,
                                      f"green: truth; red: the model's box (IoU {iou:.2f})", iou >= 0.5))
        progress.step(r + 1, len(rows), "scenes")
    metrics = {f"vqa/{kind}": _mean(v) for kind, v in sorted(correct.items())}
    metrics["vqa/accuracy"] = _mean(x for v in correct.values() for x in v)
    metrics["grounding/mean_iou"] = _mean(ious)
    metrics["grounding/iou_at_0.5"] = _mean(i >= 0.5 for i in ious)
    return metrics, samples


def text_to_image(pipe: SeedX, rows: list[dict], side: int, sampler: SamplerConfig, seed: int, progress: Progress,
                  keep: int, batch: int = 16) -> tuple[dict, list[Sample]]:
    """Captions of the square scenes -> LLM-regressed features -> stage-1 de-tokenizer -> analyser."""
    turns = []
    for r, row in enumerate(rows):
        turns.append(pipe.imagine(row["caption"], max_new_tokens=96, seed=seed))
        progress.step(r + 1, len(rows), "captions")
    drawn = [i for i, t in enumerate(turns) if len(t.image_features)]
    images: dict[int, np.ndarray] = {}
    for start in range(0, len(drawn), batch):
        chunk = drawn[start:start + batch]
        feats = np.concatenate([turns[i].image_features[:1] for i in chunk])
        for i, image in zip(chunk, pipe.render(feats, height=side, width=side, sampler=sampler, seed=seed + start)):
            images[i] = image
    colour, position, obj, count, samples = [], [], [], [], []
    for r, row in enumerate(rows):
        scene: Scene = row["drawn"]
        found = analyse(images[r]) if r in images else []
        for o in scene.objects:
            colour.append(any(d.colour == o.colour for d in found))
            position.append(any(d.colour == o.colour and d.cell == o.cell for d in found))
            obj.append(any(d.colour == o.colour and d.shape == o.shape for d in found))
        count.append(len(found) == len(scene.objects))
        if r < keep:
            ok = same_objects(found, scene)
            shown = [images[r]] if r in images else []
            samples.append(Sample("text_to_image", shown + [_drawn(scene, side)], row["caption"],
                                  ", ".join(f"{d.colour} {d.shape} at {d.cell[1]} {d.cell[0]}" for d in found)
                                  or "(no image or nothing found)", "left: generated, right: the caption's scene"
                                  if shown else "the caption's scene (the model drew no image)", ok))
    return {"t2i/colour": _mean(colour), "t2i/position": _mean(position), "t2i/object": _mean(obj),
            "t2i/count": _mean(count), "t2i/images_drawn": len(drawn) / max(len(rows), 1)}, samples


def _changed_mask(source: Scene, target: Scene, side: int) -> np.ndarray:
    """True where neither the source's nor the target's changed objects are (the region to preserve)."""
    keep = np.ones((side, side), bool)
    changed = [o for o in source.objects if o not in target.objects]
    changed += [o for o in target.objects if o not in source.objects]
    for o in changed:
        x0, y0, x1, y1 = o.box(side, side)
        keep[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1] = False
    return keep


def editing(pipe: SeedX, rows: list[dict], side: int, sampler: SamplerConfig, seed: int, progress: Progress,
            keep: int) -> tuple[dict, list[Sample]]:
    """Edit instructions on the square scenes through the edit model and the stage-2 de-tokenizer."""
    success, preserved, samples = [], [], []
    rows = [row for row in rows if row["edit"]]
    for r, row in enumerate(rows):
        source, target, instruction = row["drawn"], row["edit"]["target"], row["edit"]["instruction"]
        turn, image = pipe.edit(render(source), instruction, height=side, width=side, sampler=sampler, seed=seed,
                                max_new_tokens=96)
        found = analyse(image) if image is not None else []
        before, after, seen = pairs(source.objects), pairs(target.objects), pairs(found)
        ok = image is not None and all(seen[k] >= n for k, n in (after - before).items()) and all(
            seen[k] <= after[k] for k in before - after)
        success.append(ok)
        if image is not None:
            preserved.append(_psnr(image, _drawn(source, side), _changed_mask(source, target, side)))
        if r < keep:
            shown = [_drawn(source, side)] + ([image] if image is not None else []) + [_drawn(target, side)]
            samples.append(Sample("edit", shown, instruction, turn.text or "(no image)",
                                  "source, edited by the model, the intended target" if image is not None
                                  else "source, the intended target (the model drew no image)", ok))
        progress.step(r + 1, len(rows), "edits")
    return {"edit/success": _mean(success), "edit/preservation_psnr": _mean(preserved)}, samples


def reconstruction(pipe: SeedX, rows: list[dict], side: int, sampler: SamplerConfig, seed: int,
                   keep: int) -> tuple[dict, list[Sample]]:
    """Stage 1 from the ViT's own `vit_down` features (what it was trained on) of the square scenes."""
    scenes = [row["drawn"] for row in rows]
    views = np.stack([image_transform(render(s), pipe.image_size) for s in scenes])
    features = vit_down(pipe.encoder(views))
    negative = negative_features(pipe.vit, pooled=True)
    images = to_uint8(pipe.detokenizer.generate(jnp.asarray(features), negative, height=side, width=side,
                                                sampler=sampler, seed=seed))
    psnr, same, samples = [], [], []
    for r, (scene, image) in enumerate(zip(scenes, images)):
        truth = _drawn(scene, side)
        psnr.append(_psnr(image, truth))
        same.append(same_objects(analyse(image), scene))
        if r < keep:
            samples.append(Sample("reconstruction", [truth, image], "", "", "original, reconstruction", same[-1]))
    return {"reconstruction/psnr": _mean(psnr), "reconstruction/objects": _mean(same)}, samples
