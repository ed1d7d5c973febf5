"""The tasks that draw images: text-to-image, editing, reconstruction.

Images are written under the run's `images/` folder: text-to-image in the layout GenEval's scorer reads
(`images/<ordinal:05>/metadata.jsonl` holding the prompt's record, `images/<ordinal:05>/samples/0000.png`;
ordinal = the record's line in the prompt file, from 0), edits and reconstructions as
`images/<ordinal:05>.png`. Where the data carries a shapes-world scene, the images are also scored here
(`seedx_jax.evaluation.shapes`).

Noise: the images of a chunk of `batch_size` items are drawn as one batch from `seed + the position of
the chunk's first item` (text-to-image, reconstruction) or each from `seed` (editing, as `seedx-jax
edit` draws it), so a run's images depend on its seed and batch size, never on where it was resumed.
"""
from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
from PIL import Image

from seedx_jax.agent.prompts import PromptError
from seedx_jax.detokenizer.model import negative_features, to_uint8
from seedx_jax.evaluation import metrics as M
from seedx_jax.evaluation import shapes
from seedx_jax.evaluation.tasks import Settings, Task, problem_reason
from seedx_jax.numerics import check_finite
from seedx_jax.vision.anyres import image_transform
from seedx_jax.vision.features import vit_down
from seedx_jax.vision.image_io import ImageInputError


def save_png(pixels: np.ndarray, out: str, relative: str) -> str:
    """uint8 `[H, W, 3]` -> `out/relative`, written whole (a temporary name, then renamed)."""
    path = os.path.join(out, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path + ".tmp.png")
    os.replace(path + ".tmp.png", path)
    return relative


def _mean_of(predictions: list[dict], key: str) -> float:
    return M.mean(v for p in predictions if (v := p.get(key)) is not None)


class TextToImage(Task):
    name, field, template, max_new_tokens = "t2i", "caption", "{caption}", 120
    recorded = ("answer", "image")

    def predict(self, pipe, items, settings, ctx):
        turns, stubs = [], []
        for item in items:
            try:
                turns.append(pipe.prepare_generate(self.prompt(item, settings.template), renders=False,
                                                   max_new_tokens=settings.max_new_tokens))
                stubs.append({"id": item.id})
            except PromptError as err:
                stubs.append({"id": item.id, "problem": problem_reason(err)})
        answers = iter(pipe.answer_batch(turns, max_new_tokens=settings.max_new_tokens, seed=settings.render.seed,
                                         batch_size=settings.decode_batch_size or settings.batch_size,
                                         stage="imagining") if turns else [])
        rows = [(item, stub, None if "problem" in stub else next(answers)) for item, stub in zip(items, stubs)]
        drawn = [(item, turn) for item, _, turn in rows if turn is not None and len(turn.image_features)]
        images = {}
        if drawn:
            pixels = pipe.render(np.stack([turn.image_features[0] for _, turn in drawn]), height=settings.render.height,
                                 width=settings.render.width, sampler=settings.render.sampler, seed=settings.render.seed + ctx.start)
            images = {item.id: image for (item, _), image in zip(drawn, pixels)}
        out = []
        for item, stub, turn in rows:
            if turn is None:
                out.append(stub)
                continue
            folder = f"images/{ctx.ordinals[item.id]:05d}"
            os.makedirs(os.path.join(ctx.out, folder), exist_ok=True)
            with open(os.path.join(ctx.out, folder, "metadata.jsonl"), "w") as f:
                f.write(json.dumps({**item.meta, "prompt": item.text}) + "\n")
            image = images.get(item.id)
            stub = dict(stub, answer=turn.text,
                        image=save_png(image, ctx.out, f"{folder}/samples/0000.png") if image is not None else None)
            if "drawn" in item.meta:
                stub.update(shapes.score_t2i(item, image))
            out.append(stub)
        return out

    def score(self, items, predictions):
        out = {"images_drawn": M.mean(p["image"] is not None for p in predictions)}
        scored = [p for p in predictions if "colour" in p]
        if scored:
            out.update({k: M.mean(v for p in scored for v in p[k]) for k in ("colour", "position", "object")})
            out["count"] = M.mean(p["count"] for p in scored)
        else:
            out["geneval"] = "images/ holds GenEval's layout: score it with GenEval's evaluate_images.py"
        return out


class Edit(Task):
    name, field, template, max_new_tokens = "edit", "instruction", "{instruction}", 512
    recorded = ("answer", "image")

    def predict(self, pipe, items, settings, ctx):
        out = []
        for item in items:
            try:
                turn, image = pipe.edit(item.image(0), self.prompt(item, settings.template), height=settings.render.height,
                                        width=settings.render.width, sampler=settings.render.sampler, seed=settings.render.seed,
                                        max_new_tokens=settings.max_new_tokens)
            except (PromptError, ImageInputError) as err:
                out.append({"id": item.id, "problem": problem_reason(err)})
                continue
            relative = f"images/{ctx.ordinals[item.id]:05d}.png"
            record = {"id": item.id, "answer": turn.text,
                      "image": save_png(image, ctx.out, relative) if image is not None else None}
            if "target" in item.meta:
                record.update(shapes.score_edit(item, image, settings.render.height))
            out.append(record)
        return out

    def score(self, items, predictions):
        out = {"images_drawn": M.mean(p["image"] is not None for p in predictions)}
        if any("success" in p for p in predictions):
            out.update(success=_mean_of(predictions, "success"),
                       preservation_psnr=_mean_of(predictions, "preservation_psnr"))
        return out


class Reconstruct(Task):
    """De-tokenizer reconstruction from the ViT's pooled features (`vit_down`: what stage 1 is trained on)."""

    name, field, template, max_new_tokens = "reconstruct", "image", "", 1
    recorded = ("image",)

    def check_template(self, template: str) -> str:
        return template

    def predict(self, pipe, items, settings, ctx):
        records, loaded = {}, []
        for item in items:
            try:
                loaded.append((item, item.image(0)))
            except ImageInputError as err:
                records[item.id] = {"id": item.id, "problem": problem_reason(err)}
        if loaded:
            for (item, image), recon in zip(loaded, self._reconstruct(pipe, [im for _, im in loaded], settings, ctx)):
                record = {"id": item.id, "image": save_png(recon, ctx.out, f"images/{ctx.ordinals[item.id]:05d}.png")}
                if "drawn" in item.meta:
                    record.update(shapes.score_reconstruction(item, recon, settings.render.height))
                else:
                    source = np.asarray(image.resize((settings.render.width, settings.render.height), Image.Resampling.BICUBIC))
                    record["psnr"] = shapes.psnr(recon, source)
                records[item.id] = record
        return [records[item.id] for item in items]

    @staticmethod
    def _reconstruct(pipe, images: list[Image.Image], settings: Settings, ctx) -> np.ndarray:
        """The images through the ViT's pooled features and the de-tokenizer, one batch -> uint8 [N, H, W, 3]."""
        views = np.stack([image_transform(image, pipe.image_size) for image in images])
        features = vit_down(pipe.encoder(views))
        condition = None
        if pipe.configs.detokenizer.edits:  # stage 2 also sees the image itself
            condition = jnp.asarray(np.stack([np.asarray(image.resize((settings.render.width, settings.render.height),
                                                                      Image.Resampling.BICUBIC), np.float32) / 255
                                              for image in images]))
        r = settings.render
        with pipe.progress.stage(f"reconstructing {len(images)} image(s) at {r.width}x{r.height}, {r.steps} steps"):
            pixels = pipe.detokenizer.generate(jnp.asarray(features), negative_features(pipe.vit, pooled=True),
                                               height=r.height, width=r.width, sampler=r.sampler,
                                               condition_images=condition, seed=r.seed + ctx.start)
        check_finite(pixels, "the reconstructed images")
        return to_uint8(pixels)

    def score(self, items, predictions):
        out = {"psnr": _mean_of(predictions, "psnr")}
        if any("objects" in p for p in predictions):
            out["objects"] = _mean_of(predictions, "objects")
        return out


def image_tasks() -> dict[str, Task]:
    return {t.name: t for t in (TextToImage(), Edit(), Reconstruct())}
