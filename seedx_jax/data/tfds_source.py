"""TensorFlow Datasets prepared on disk as random-access sources, for training and evaluation (docs/tfds.md).

* `open_tfds(name, split, data_dir)`: the dataset's `tfds.data_source` (`len`, `[i]` -> dict of numpy
  arrays / bytes), read from the prepared files only, so builders whose code needs TensorFlow (most
  of TFDS's own, e.g. coco_captions) and builders that are not installed at all open as long as the
  dataset is prepared in ArrayRecord (or Parquet, the other format `tfds.data_source` reads).
* `TfdsReader(name, split, data_dir, kind)`: the same as training `RawRecord`s of one kind, through an
  adapter chosen by dataset (shapes_world, coco_captions) or by feature names (image + caption,
  image + conversation). Images stay the encoded bytes stored in the dataset (no decode here).
* `parse_tfds_spec("coco_captions:train")` -> ("coco_captions", "train"): a training source's `paths`.

Names follow TFDS (`tfds.data_source` docstring): `name[/config][:version]`; splits follow the TFDS
split API (`train`, `test[:10]`, `train[:50%]`, `train+test`). The data folder is the one given, else
TFDS's default: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from typing import Callable

from seedx_jax.data.formats import TASK_KINDS, RawRecord
from seedx_jax.paths import resolve

SHAPES_WORLD = "shapes_world"  # our builder: seedx_jax.demo.tfds_builder
_NAME = r"[A-Za-z]\w*(?:/[\w.-]+)?(?::[\d*]+\.[\d*]+\.[\d*]+)?"  # name[/config][:version]
_SPEC = re.compile(rf"(?P<name>{_NAME}):(?P<split>[A-Za-z]\S*)")
_SPEC_FORM = "NAME[/CONFIG][:VERSION]:SPLIT, e.g. coco_captions:train or shapes_world:test[:10]"


class TfdsError(ValueError):
    """A TFDS dataset that cannot be read; one line naming it and how to fix it."""


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """`"coco_captions/2014:1.1.0:train[:100]"` -> `("coco_captions/2014:1.1.0", "train[:100]")`.

    Raises:
      ValueError: one line naming `spec` and the expected form.
    """
    match = _SPEC.fullmatch(spec.strip())
    if not match:
        raise ValueError(f"TFDS source {spec!r}: expected {_SPEC_FORM}")
    return match["name"], match["split"]


def default_data_dir() -> str:
    """TFDS's default data folder, `$TFDS_DATA_DIR`, else `~/tensorflow_datasets` (tensorflow_datasets/core/
    constants.py, `get_default_data_dir`), resolved at each call so a changed environment counts."""
    return resolve(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _base(name: str) -> str:
    return re.split(r"[/:]", name, maxsplit=1)[0]


def _import_tfds(name: str):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise TfdsError(f"TFDS dataset {name!r}: tensorflow-datasets is not installed; pip install "
                        f"seedx_jax[data]") from None
    return tfds


def prepared_builder(name: str, data_dir: str | None = None):
    """The read-only `tfds.core.DatasetBuilder` of `name` as prepared in `data_dir` (`info`, splits,
    features), built from the files, never from the builder's code.

    Raises:
      TfdsError: tensorflow-datasets is missing, a malformed name, the dataset is not prepared there, or
        it is prepared in a format without random access (tfrecord: only TensorFlow reads it).
    """
    if not re.fullmatch(_NAME, name):
        raise TfdsError(f"TFDS dataset {name!r}: expected NAME[/CONFIG][:VERSION], e.g. coco_captions or "
                        f"coco_captions/2014:1.1.0")
    tfds = _import_tfds(name)
    if _base(name) == SHAPES_WORLD:
        importlib.import_module("seedx_jax.demo.tfds_builder")  # registers it: tfds.data_source finds it too
    where = resolve(data_dir) if data_dir and data_dir.strip() else default_data_dir()
    try:
        builder = tfds.core.read_only_builder.builder_from_files(name, data_dir=where)
    except tfds.core.registered.DatasetNotFoundError:
        raise TfdsError(f"TFDS dataset {name!r} is not prepared in {where}{_found(where, name)}: {_how(name, where)}"
                        ) from None
    formats = builder.info.available_file_formats()
    if not formats & tfds.core.file_adapters.FileFormat.with_random_access():
        stored = ", ".join(sorted(f.value for f in formats)) or "no recorded format"
        raise TfdsError(f"TFDS dataset {name!r} in {builder.data_dir} is prepared as {stored}, which only TensorFlow "
                        f"reads; prepare it again as ArrayRecord: {_how(name, where)}")
    return builder


def _found(where: str, name: str) -> str:
    """What `where/<name>` holds instead (configs or versions), for the not-prepared message."""
    folder = os.path.join(where, _base(name))
    held = sorted(e for e in os.listdir(folder) if not e.startswith(".")) if os.path.isdir(folder) else []
    return f" (its folder {folder} holds {', '.join(held)})" if held else ""


def _how(name: str, where: str) -> str:
    if _base(name) == SHAPES_WORLD:
        return f"python -m seedx_jax.demo.tfds_builder --data_dir {where}"
    return (f"run `tfds build {name.split(':')[0]} --data_dir {where} --file_format array_record` on a machine "
            f"with TensorFlow")


def open_tfds(name: str, split: str, data_dir: str | None = None, *, decode_images: bool = True):
    """The random-access source of `split` of the prepared TFDS dataset `name` (`tfds.data_source`):
    `len(source)`, `source[i]` -> {feature: value}; Image features as uint8 arrays [H, W, C], or, with
    `decode_images=False`, as the encoded PNG / JPEG bytes stored; Text features as UTF-8 bytes.

    `data_dir`: relative to the working directory, `~` expanded; None / "" = `default_data_dir()`.

    Raises:
      TfdsError: `prepared_builder`'s errors, and a split the dataset does not have (naming its splits).
    """
    return _data_source(prepared_builder(name, data_dir), name, split, decode_images)


def _data_source(builder, name: str, split: str, decode_images: bool):
    tfds = _import_tfds(name)
    decoders = None if decode_images else {key: tfds.decode.SkipDecoding() for key, feature in
                                           builder.info.features.items() if isinstance(feature, tfds.features.Image)}
    try:
        return builder.as_data_source(split=split, decoders=decoders)
    except ValueError as err:
        reason = str(err).splitlines()[0].split(". ")[0]
        raise TfdsError(f"TFDS dataset {name!r} in {builder.data_dir}: split {split!r}: {reason}; its splits are "
                        f"{', '.join(builder.info.splits)} (a slice: train[:100], train[10%:])") from None


def _text(value) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _shapes_world(example: dict, kind: str) -> tuple[dict, dict]:
    """As `seedx_jax.demo.dataset.write_split` writes a scene's records."""
    try:
        row = json.loads(example["record"])
    except ValueError as err:  # also not UTF-8
        return {"error": f"malformed record ({err})"}, {}
    if kind == "vqa":
        return {"data": row["questions"] + list(row["grounding"] or [])}, {"image": example["image"]}
    if kind == "caption":
        return {"caption": row["caption"]}, {"image": example["drawn_image"]}
    if not row["edit"]:
        return {"error": "scene has no edit"}, {}
    return ({"instruction": row["edit"]["instruction"]},
            {"source_image": example["drawn_image"], "target_image": example["target_image"]})


def _coco_captions(example: dict, kind: str) -> tuple[dict, dict]:
    """TFDS coco_captions (tensorflow_datasets/object_detection/coco_captions.py): `image` and
    `captions` {text, id}, 5 or so per image; the first caption."""
    captions = example["captions"]["text"]
    return ({"caption": _text(captions[0])} if len(captions) else {}), {"image": example["image"]}


def _image_caption(example: dict, kind: str) -> tuple[dict, dict]:
    return {"caption": _text(example["caption"])}, {"image": example["image"]}


def _image_conversation(example: dict, kind: str) -> tuple[dict, dict]:
    return {"data": [_text(t) for t in example["conversation"]]}, {"image": example["image"]}


@dataclasses.dataclass(frozen=True)
class Layout:
    """How the examples of a dataset become `RawRecord` fields and images."""

    description: str  # for messages
    features: tuple[str, ...]  # the features `read` needs
    kinds: tuple[str, ...]  # the RawRecord kinds it gives
    read: Callable[[dict, str], tuple[dict, dict]]  # (example, kind) -> (fields, images)


DATASET_LAYOUTS = {
    SHAPES_WORLD: Layout("shapes_world", ("image", "drawn_image", "target_image", "record"),
                         ("vqa", "caption", "edit"), _shapes_world),
    "coco_captions": Layout("coco_captions", ("image", "captions"), ("caption",), _coco_captions),
}
GENERIC_LAYOUTS = (Layout("image + caption", ("image", "caption"), ("caption",), _image_caption),
                   Layout("image + conversation", ("image", "conversation"), ("vqa",), _image_conversation))


def _tasks(kinds) -> str:
    return ", ".join(task for task, kind in TASK_KINDS.items() if kind in kinds)


def choose_layout(name: str, features, kind: str) -> Layout:
    """The adapter of dataset `name` with `features` for records of `kind`.

    Raises:
      TfdsError: no adapter gives `kind` records of this dataset (one line: what it can train).
    """
    named = DATASET_LAYOUTS.get(_base(name))
    candidates = [named] if named else [g for g in GENERIC_LAYOUTS if set(g.features) <= set(features)]
    if not candidates:
        generic = "; ".join(f"{g.description} (tasks {_tasks(g.kinds)})" for g in GENERIC_LAYOUTS)
        raise TfdsError(f"TFDS dataset {name!r} has features {', '.join(sorted(features))}: seedx_jax trains on "
                        f"{', '.join(DATASET_LAYOUTS)} and datasets with the features {generic}")
    layout = next((c for c in candidates if kind in c.kinds), None)
    if layout is None:
        kinds = sorted({k for c in candidates for k in c.kinds})
        raise TfdsError(f"TFDS dataset {name!r} gives {'/'.join(kinds)} records, for the tasks {_tasks(kinds)}; "
                        f"not {kind} records")
    missing = [f for f in layout.features if f not in features]
    if missing:
        raise TfdsError(f"TFDS dataset {name!r} lacks the feature(s) {', '.join(missing)} that {layout.description} "
                        f"has")
    return layout


class TfdsReader:
    """`len(reader)`, `reader[i]` -> `RawRecord` of `kind` (vqa | caption | edit) with location
    `tfds:NAME:SPLIT#i`; images are the encoded bytes stored in the dataset.

    Raises (at construction):
      ValueError: an unknown `kind`.
      TfdsError: `open_tfds`'s errors, or a dataset without an adapter for `kind` (`choose_layout`).
    """

    def __init__(self, name: str, split: str, data_dir: str | None = None, kind: str = "caption"):
        if kind not in set(TASK_KINDS.values()):
            raise ValueError(f"record kind {kind!r} is not one of {sorted(set(TASK_KINDS.values()))}")
        self.name, self.split, self.kind = name, split, kind
        builder = prepared_builder(name, data_dir)
        self._layout = choose_layout(name, builder.info.features.keys(), kind)
        self._source = _data_source(builder, name, split, decode_images=False)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> RawRecord:
        fields, images = self._layout.read(self._source[i], self.kind)
        return RawRecord(self.kind, f"tfds:{self.name}:{self.split}#{i}", fields, images)
