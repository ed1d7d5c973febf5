"""RawRecord -> one training example of fixed shapes (numpy), for every stage; bad samples -> `Skip`.

MLLM examples (docs/training_recipe.md) are row-local: the images of a row sit in that row's `max_views`
comprehension slots and `gen_slots` generation slots, in the order of their placeholders, so rows can
be split across processes and devices without renumbering images:

    input_ids, labels, attention_mask, ids_cmp_mask, ids_gen_mask   [L]
    cmp_pixels [K, S, S, 3] (normalised views), cmp_positions [K, 2], cmp_valid [K]
    gen_pixels [G, S, S, 3], gen_valid [G]

De-tokenizer examples: `target` [R, R, 3] in [-1, 1], `view` [S, S, 3] the target's ViT view, and for
stage 2 `source` [R, R, 3] in [-1, 1].

Filters as the official builders (src/data/*.py): minimum side, aspect ratio in [r, 1/r], caption similarity
threshold and `filter_flag`. Text from the data (questions, answers, captions, edit instructions and
responses) follows the rule for typed text at inference (`check_user_text`): a sample that types an
image-structure or control token (`<img>`, `<img_00003>`, `<patch>`, `</s>`, ...), which would shift
every image slot of the row, is skipped with the reason; box and location tokens stay allowed.
Empty text is skipped where it trains nothing (an answer) or means nothing (an instruction, a
question without the image beside it); an empty edit response stays, as in SEED-X's list.

Choices where the facts are silent ([UNKNOWN]: the de-tokenizer training data path is not released):
de-tokenizer images are centre-cropped to a square and resized (bicubic) to `resolution`.
"""
from __future__ import annotations

import dataclasses
import random

import numpy as np
from PIL import Image

from seedx_jax.agent.prompts import PromptError, check_user_text
from seedx_jax.agent.tokenizer import SeedXTokenizer
from seedx_jax.data.formats import RawRecord
from seedx_jax.data.sequences import PromptLists, SequenceError, edit_sequence, t2i_sequence, vqa_sequence
from seedx_jax.vision.anyres import COMPREHENSION_GRIDS, EDIT_GRIDS, image_transform, process_anyres
from seedx_jax.vision.image_io import ImageInputError, load_image


@dataclasses.dataclass(frozen=True)
class Skip:
    """A dropped sample: where it came from and why (counted and logged by the loader)."""

    location: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """Static shapes and filters of one data source's examples."""

    task: str  # vqa | t2i | edit (MLLM stages) | detok_image | detok_edit (de-tokenizer stages)
    max_length: int = 880
    view_size: int = 448  # ViT input side (any-res base)
    max_views: int = 10  # comprehension image slots per row (any-res tiles + global)
    grids: tuple[str, ...] = COMPREHENSION_GRIDS
    resolution: int = 1024  # de-tokenizer image side
    min_resolution: int = 0  # drop images with a smaller side (official: 400)
    min_aspect_ratio: float = 0.0  # drop images with h/w outside [r, 1/r] (official: 0.6)
    similarity_threshold: float = 0.0  # captions (webdataset metadata)
    prompts: PromptLists = PromptLists()

    TASKS = ("vqa", "t2i", "edit", "detok_image", "detok_edit")

    def __post_init__(self):
        if self.task not in self.TASKS:
            raise ValueError(f"ExampleSpec.task={self.task!r} is not one of {self.TASKS}")

    @property
    def gen_slots(self) -> int:
        return {"vqa": 0, "t2i": 1, "edit": 1}.get(self.task, 0)

    @property
    def cmp_slots(self) -> int:
        return 2 if self.task in ("t2i", "edit") else self.max_views


def example_shapes(spec: ExampleSpec) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{field: (shape, dtype)} of every example `ExampleBuilder(spec, ...)` yields (see the module doc)."""
    f32, b = np.dtype(np.float32), np.dtype(bool)
    s, r = spec.view_size, spec.resolution
    if spec.task.startswith("detok"):
        shapes = {"target": ((r, r, 3), f32), "view": ((s, s, 3), f32)}
        if spec.task == "detok_edit":
            shapes["source"] = ((r, r, 3), f32)
        return shapes
    length, k, g = (spec.max_length,), spec.cmp_slots, spec.gen_slots
    return {"input_ids": (length, np.dtype(np.int32)), "labels": (length, np.dtype(np.int32)),
            "attention_mask": (length, b), "ids_cmp_mask": (length, b), "ids_gen_mask": (length, b),
            "cmp_pixels": ((k, s, s, 3), f32), "cmp_positions": ((k, 2), f32), "cmp_valid": ((k,), b),
            "gen_pixels": ((g, s, s, 3), f32), "gen_valid": ((g,), b)}


def _check_size(image: Image.Image, spec: ExampleSpec, name: str) -> None:
    w, h = image.size
    if min(w, h) < spec.min_resolution:
        raise SequenceError(f"{name} is {w}x{h}, smaller than min_resolution {spec.min_resolution}")
    r = spec.min_aspect_ratio
    if r and not r <= h / w <= 1 / r:
        raise SequenceError(f"{name} aspect ratio h/w = {h / w:.2f} outside [{r}, {1 / r:.2f}]")


def _similarity(metadata: dict) -> float | None:
    """As the official filter: `all_similarities` (max), `similarity`, `score` or `SCORE`."""
    if "all_similarities" in metadata:
        return float(max(metadata["all_similarities"]))
    for key in ("similarity", "score", "SCORE"):
        if key in metadata:
            return float(metadata[key])
    return None


def square_crop(image: Image.Image, side: int) -> np.ndarray:
    """Centre crop to a square, bicubic resize to side x side -> [side, side, 3] in [-1, 1]."""
    w, h = image.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    pixels = np.asarray(image.crop(box).resize((side, side), Image.Resampling.BICUBIC), np.float32)
    return pixels / 127.5 - 1.0


class ExampleBuilder:
    """`builder(record, seed) -> dict of arrays | Skip`; `seed` drives the per-sample coin flips
    (image before/after text, prompt choice) so a sample is the same wherever it is built."""

    def __init__(self, spec: ExampleSpec, tokenizer: SeedXTokenizer | None):
        if spec.task in ("vqa", "t2i", "edit") and tokenizer is None:
            raise ValueError(f"task {spec.task!r} needs a tokenizer")
        self.spec, self.tok = spec, tokenizer

    def __call__(self, record: RawRecord, seed: int):
        try:
            if "error" in record.fields:
                raise SequenceError(record.fields["error"])
            return getattr(self, "_" + self.spec.task)(record, random.Random(seed))
        except (SequenceError, ImageInputError, PromptError) as err:
            return Skip(record.location, str(err))
        except KeyError as err:
            return Skip(record.location, f"missing field {err}")

    def _text(self, text: str, name: str, *, may_be_empty: bool = False) -> None:
        """Raises PromptError (`check_user_text`) for a field `name` the row cannot hold."""
        if not (may_be_empty and not text.strip()):
            check_user_text(self.tok, text, name)

    def _image(self, record: RawRecord, name: str) -> Image.Image:
        if name not in record.images:
            raise SequenceError(f"no {name}")
        image = load_image(record.images[name])
        _check_size(image, self.spec, name)
        return image

    def _row(self, seq, cmp_views, cmp_positions, gen_views) -> dict:
        spec = self.spec
        k, g, s = spec.cmp_slots, spec.gen_slots, spec.view_size
        cmp = np.zeros((k, s, s, 3), np.float32)
        pos = np.zeros((k, 2), np.float32)
        gen = np.zeros((g, s, s, 3), np.float32)
        if len(cmp_views):
            cmp[:len(cmp_views)], pos[:len(cmp_views)] = cmp_views, cmp_positions
        if len(gen_views):
            gen[:len(gen_views)] = gen_views
        return dict(input_ids=seq.input_ids, labels=seq.labels, attention_mask=seq.attention_mask, ids_cmp_mask=seq.ids_cmp_mask,
                    ids_gen_mask=seq.ids_gen_mask, cmp_pixels=cmp, cmp_positions=pos,
                    cmp_valid=np.arange(k) < len(cmp_views), gen_pixels=gen, gen_valid=np.arange(g) < len(gen_views))

    def _vqa(self, record: RawRecord, rng: random.Random) -> dict:
        turns = record.fields["data"]
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
            raise SequenceError("'data' must be a list of strings")
        for i, text in enumerate(turns):  # the image goes beside the first question, which may be all it has
            self._text(text, f"data[{i}] (the {'answer' if i % 2 else 'question'})",
                       may_be_empty=i == 0 and "image" in record.images)
        image_first = rng.random() < 0.5
        if "image" not in record.images:
            seq = vqa_sequence(self.tok, turns, num_tiles=None, max_length=self.spec.max_length, image_first=image_first)
            return self._row(seq, [], [], [])
        anyres = process_anyres(self._image(record, "image"), self.spec.grids, base=self.spec.view_size)
        if anyres.num_views > self.spec.max_views:
            raise SequenceError(f"{anyres.num_views} views > max_views {self.spec.max_views}")
        seq = vqa_sequence(self.tok, turns, num_tiles=anyres.num_tiles, max_length=self.spec.max_length,
                           image_first=image_first)
        return self._row(seq, anyres.pixels, anyres.positions, [])

    def _caption_text(self, record: RawRecord) -> str:
        caption = str(record.fields.get("caption", "")).strip()
        if not caption:
            raise SequenceError("empty caption")
        meta = record.fields.get("metadata") or {}
        if meta.get("filter_flag") is False:
            raise SequenceError("filter_flag is False")
        score = _similarity(meta)
        if score is not None and score < self.spec.similarity_threshold:
            raise SequenceError(f"similarity {score} < {self.spec.similarity_threshold}")
        self._text(caption, "the caption")
        return caption

    def _t2i(self, record: RawRecord, rng: random.Random) -> dict:
        caption = self._caption_text(record)
        anyres = process_anyres(self._image(record, "image"), EDIT_GRIDS, base=self.spec.view_size)
        index = rng.randrange(len(self.spec.prompts.generation))
        seq = t2i_sequence(self.tok, caption, prompt_index=index, max_length=self.spec.max_length,
                           prompts=self.spec.prompts)
        if seq.embeds_gen_mask.any():  # generation: the global view is the target
            return self._row(seq, [], [], anyres.pixels[1:])
        return self._row(seq, anyres.pixels, anyres.positions, [])  # image-first captioning fallback

    def _edit(self, record: RawRecord, rng: random.Random) -> dict:
        fields = record.fields
        instruction = fields.get("instruction_new") or fields["instruction"]
        response = fields.get("response")
        if response is None:
            response = rng.choice(self.spec.prompts.edit_responses)
        if not isinstance(instruction, str) or not isinstance(response, str):
            raise SequenceError("'instruction' and 'response' must be strings")
        self._text(instruction, "the instruction")
        self._text(response, "the response", may_be_empty=True)
        source = process_anyres(self._image(record, "source_image"), EDIT_GRIDS, base=self.spec.view_size)
        target = process_anyres(self._image(record, "target_image"), EDIT_GRIDS, base=self.spec.view_size)
        seq = edit_sequence(self.tok, instruction, response=response, max_length=self.spec.max_length,
                            image_first=rng.random() < 0.5)
        return self._row(seq, source.pixels, source.positions, target.pixels[1:])

    def _detok_image(self, record: RawRecord, rng: random.Random) -> dict:
        name = "image" if "image" in record.images else "target_image"
        image = self._image(record, name)
        return dict(target=square_crop(image, self.spec.resolution), view=image_transform(image, self.spec.view_size))

    def _detok_edit(self, record: RawRecord, rng: random.Random) -> dict:
        target = self._image(record, "target_image")
        return dict(target=square_crop(target, self.spec.resolution), view=image_transform(target, self.spec.view_size),
                    source=square_crop(self._image(record, "source_image"), self.spec.resolution))
