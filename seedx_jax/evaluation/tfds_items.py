"""TFDS datasets (`--data tfds:NAME[/CONFIG]:SPLIT`) -> `Item`s, read through `tfds.data_source`
(`seedx_jax.data.tfds_source.open_tfds`: prepared ArrayRecord files, no TensorFlow).

Layouts, recognised by their features:
* `shapes_world` (seedx_jax.demo.tfds_builder): a scene row (`record`) and its images -> the shapes
  world's items (`seedx_jax.evaluation.shapes`);
* RefCOCO (`ref_coco`): `objects` with `bbox` (ymin, xmin, ymax, xmax, fractions of the image) and
  `refexp/raw` -> one grounding item per referring expression;
* captions (`coco_captions`): `captions/text` -> one text-to-image prompt per image (its first caption);
* any other: the features are read as a jsonl record's fields (`seedx_jax.evaluation.files.FIELDS`),
  Image features as the record's images.
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
from PIL import Image

from seedx_jax.evaluation import shapes
from seedx_jax.evaluation.files import SourceFormatError, record_item
from seedx_jax.evaluation.items import Item, Problem


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _image(source, index: int, feature: str) -> Callable[[], Image.Image]:
    return lambda: Image.fromarray(np.asarray(source[index][feature])).convert("RGB")


def _image_features(example: dict) -> list[str]:
    return [k for k, v in example.items() if isinstance(v, np.ndarray) and v.dtype == np.uint8 and v.ndim == 3]


def _field(value):
    """A decoded feature as a JSON-like value."""
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, np.ndarray):
        return [_field(v) for v in value] if value.dtype == object or value.ndim else value.item()
    if isinstance(value, dict):
        return {k: _field(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_field(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def _refcoco(task: str, source, name: str) -> list[Item | Problem]:
    if task != "grounding":
        raise SourceFormatError(f"tfds:{name} is a referring-expression dataset: evaluate it with the grounding task")
    records = []
    for i in range(len(source)):
        example = source[i]
        height, width = np.asarray(example["image"]).shape[:2]
        objects = example["objects"]
        for k, bbox in enumerate(np.asarray(objects["bbox"]).reshape(-1, 4)):
            ymin, xmin, ymax, xmax = (float(v) for v in bbox)
            box = (xmin * width, ymin * height, xmax * width, ymax * height)
            for r, raw in enumerate(np.asarray(objects["refexp"]["raw"][k]).reshape(-1)):
                records.append(Item(f"{i}/{k}/{r}", f"tfds:{name}#{i}", _text(raw), (_image(source, i, "image"),),
                                    box=box))
    return records


def read_tfds(task: str, name: str, source) -> tuple[list[Item | Problem], dict[str, str]]:
    """The items of `task` in the opened TFDS data `source` of dataset `name` -> (records, the source's
    own templates).

    Raises:
      SourceFormatError: a layout the task cannot read, or an empty split.
    """
    if len(source) == 0:
        raise SourceFormatError(f"tfds:{name} is empty")
    first = source[0]
    if "record" in first and "drawn_image" in first:  # shapes_world
        if task not in shapes.TASKS:
            raise SourceFormatError(f"tfds:{name} (the shapes world) has no {task} items; it has "
                                    f"{', '.join(shapes.TASKS)}")
        records: list[Item | Problem] = []
        for i in range(len(source)):
            row = json.loads(_text(source[i]["record"]))
            records += shapes.scene_items(task, row, f"tfds:{name}#{i}", {
                "image": _image(source, i, "image"), "drawn_image": _image(source, i, "drawn_image")})
        return records, shapes.TEMPLATES
    if isinstance(first.get("objects"), dict) and "refexp" in first["objects"]:
        return _refcoco(task, source, name), {}
    if isinstance(first.get("captions"), dict) and "text" in first["captions"]:
        if task != "t2i":
            raise SourceFormatError(f"tfds:{name} is an image-caption dataset: evaluate it with the t2i task")
        return [Item(str(i), f"tfds:{name}#{i}", _text(np.asarray(source[i]["captions"]["text"]).reshape(-1)[0]))
                for i in range(len(source))], {}
    images = _image_features(first)
    records = []
    for i in range(len(source)):
        example = source[i]
        fields = {k: _field(v) for k, v in example.items() if k not in images}
        records.append(record_item(task, fields, f"tfds:{name}#{i}", str(i),
                                   tuple(_image(source, i, f) for f in images)))
    return records, {}
