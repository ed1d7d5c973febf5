"""What every benchmark reader yields: `Item`s to evaluate and `Problem`s (records that cannot be).

A reader never stops on a bad record: a malformed line, a missing image or a gold answer that is not
one of the options becomes a `Problem` with its `file:line`, and the metrics JSON counts and lists them.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Union

from PIL import Image

from seedx_jax.vision.image_io import load_image

# an image as a record names it: a file path, encoded bytes, or (a TFDS record) a function that decodes it
ImageRef = Union[str, bytes, Callable[[], Image.Image]]


@dataclasses.dataclass
class Item:
    """One benchmark question (or prompt), with everything its task scores it against.

    `id` is unique within a source and keys the predictions file (resume skips the ids it holds);
    `location` is where the record is (`file:line`, `tfds:name:split#index`), for messages.
    """

    id: str
    location: str
    text: str  # the question, referring expression, caption or instruction
    images: tuple[ImageRef, ...] = ()
    options: tuple[str, ...] = ()  # multiple choice: the options, in order (letters A, B, ...)
    answers: tuple[str, ...] = ()  # gold: MC ("B"), yes/no ("yes"), VQA (every annotator's answer)
    category: str = ""  # what per-category metrics group by (SEED-Bench dimension, POPE split, ...)
    box: tuple[float, float, float, float] | None = None  # grounding: (x0, y0, x1, y1) pixels of images[0]
    meta: dict = dataclasses.field(default_factory=dict)  # JSON: GenEval metadata, a shapes-world scene, ...

    def image(self, k: int = 0) -> Image.Image:
        """Image `k`, decoded (RGB). Raises ImageInputError naming the image (the run names the record)."""
        ref = self.images[k]
        return ref() if callable(ref) else load_image(ref)


class Problem(NamedTuple):
    """A record that is not evaluated, and why (reported in the metrics JSON)."""

    location: str
    reason: str

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


def problem_summary(problems: list[Problem], *, listed: int = 200) -> dict:
    """The metrics JSON's account of skipped records: a count, counts by reason, the first `listed`."""
    reasons: dict[str, int] = {}
    for p in problems:
        key = p.reason.split(" (", 1)[0].split(": ", 1)[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {"count": len(problems), "by_reason": dict(sorted(reasons.items())),
            "records": [str(p) for p in problems[:listed]]}
