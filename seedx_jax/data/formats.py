"""Random-access readers of SEED-X's training data formats (docs/training_recipe.md), all yielding `RawRecord`s.

* LLaVA / ShareGPT4V conversation jsonl: `{"image": "rel/path.jpg", "data": [user, assistant, ...]}`.
* Single-turn edit jsonl: `{"source_image", "target_image", "instruction"[, "instruction_new", "response"]}`.
* webdataset-style tar shards of image-caption pairs: members `KEY.jpg`, `KEY.txt`, optional `KEY.json`.
* ArrayRecord shards written by `seedx_jax.data.prepare` (any of the above, images embedded).
* TensorFlow Datasets prepared on disk, named `NAME[/CONFIG][:VERSION]:SPLIT` (`seedx_jax.data.tfds_source`).

Readers index their files once (line offsets, tar member offsets) and read one record per lookup, so
they work inside Grain worker processes. Nothing is parsed or decoded at index time: a malformed line
or a missing image becomes a skipped sample later, reported with its `location` (file:line).
"""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import tarfile
from typing import Sequence

import numpy as np

from seedx_jax.paths import resolve

FORMATS = ("llava_jsonl", "edit_jsonl", "webdataset", "array_record", "tfds")
KINDS = {"llava_jsonl": "vqa", "edit_jsonl": "edit", "webdataset": "caption"}
# the record kind each training task reads (seedx_jax.data.examples.ExampleBuilder): a TFDS dataset is
# read as records of this kind
TASK_KINDS = {"vqa": "vqa", "t2i": "caption", "edit": "edit", "detok_image": "caption", "detok_edit": "edit"}


@dataclasses.dataclass
class RawRecord:
    """One sample before preprocessing: `kind` vqa | caption | edit, `fields` the JSON fields, `images`
    name -> encoded bytes or a file path (read when the sample is preprocessed)."""

    kind: str
    location: str
    fields: dict
    images: dict[str, bytes | str]


def _image_path(image_dir: str, value) -> str | None:
    """Joined with image_dir after stripping a leading '/'; empty, 'none' or containing 'null' = no image."""
    if value is None or not isinstance(value, str):
        return None
    v = value.strip()
    if not v or v.lower() == "none" or "null" in v.lower():
        return None
    return os.path.join(image_dir, v.lstrip("/"))


def _json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # also not UTF-8
        return False


class JsonlReader:
    """One record per non-empty line; `kind` is "vqa" (LLaVA) or "edit"."""

    # none of a file's first lines a JSON object: another kind of file, refused whole (a bad line among
    # good ones is skipped and reported when read)
    PROBE_LINES = 8

    def __init__(self, path: str, kind: str, image_dir: str = ""):
        """Raises: FileNotFoundError (no such file), ValueError (a folder, or not a JSON-lines file)."""
        if os.path.isdir(path):
            raise ValueError(f"{path}: a folder, not a jsonl file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such jsonl file")
        self.path, self.kind, self.image_dir = path, kind, image_dir
        offsets, pos, probe = [], 0, []
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    offsets.append((pos, len(line), number))
                    if len(probe) < self.PROBE_LINES:
                        probe.append((number, line))
                pos += len(line)
        self._index = np.asarray(offsets, np.int64).reshape(-1, 3)
        if probe and not any(_json_object(line) for _, line in probe):
            raise ValueError(f"{path}: not a JSON-lines file (none of its first {len(probe)} lines is a JSON "
                             f"object; line {probe[0][0]} starts {probe[0][1][:20]!r})")

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> RawRecord:
        start, size, number = (int(v) for v in self._index[i])
        location = f"{self.path}:{number}"
        with open(self.path, "rb") as f:
            f.seek(start)
            line = f.read(size)
        try:
            fields = json.loads(line)
            if not isinstance(fields, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            return RawRecord(self.kind, location, {"error": f"malformed line ({err})"}, {})
        names = ("image",) if self.kind == "vqa" else ("source_image", "target_image")
        images = {n: p for n in names if (p := _image_path(self.image_dir, fields.get(n))) is not None}
        return RawRecord(self.kind, location, fields, images)


class WebDatasetReader:
    """Image-caption tar shards: members grouped by key (the name up to the first dot)."""

    IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

    def __init__(self, paths: Sequence[str]):
        self._samples = []  # (tar path, key, {ext: (offset, size)})
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such tar shard")
            members: dict[str, dict] = {}
            with tarfile.open(path) as tar:
                for info in tar:
                    if info.isfile():
                        base = os.path.basename(info.name)
                        key, _, ext = base.partition(".")
                        members.setdefault(os.path.join(os.path.dirname(info.name), key), {})[ext.lower()] = (
                            info.offset_data, info.size)
            self._samples += [(path, key, m) for key, m in members.items()]

    def __len__(self) -> int:
        return len(self._samples)

    def __getitem__(self, i: int) -> RawRecord:
        path, key, members = self._samples[i]
        location = f"{path}:{key}"

        def read(ext):
            offset, size = members[ext]
            with open(path, "rb") as f:
                f.seek(offset)
                return f.read(size)

        image_ext = next((e for e in self.IMAGE_EXTS if e in members), None)
        fields = {}
        if "txt" in members:
            fields["caption"] = read("txt").decode("utf-8", errors="replace")
        if "json" in members:
            try:
                fields["metadata"] = json.loads(read("json"))
            except ValueError as err:
                fields["error"] = f"malformed {key}.json ({err})"
        return RawRecord("caption", location, fields, {"image": read(image_ext)} if image_ext else {})


# ArrayRecord payload: magic, u32 header length, JSON header {kind, location, fields, images: {name: size}},
# then the image bytes in header order.
_MAGIC = b"SXR1"


def encode_record(record: RawRecord) -> bytes:
    """A RawRecord with every image as bytes -> one ArrayRecord payload."""
    blobs = list(record.images.items())
    if any(not isinstance(b, bytes) for _, b in blobs):
        raise TypeError("encode_record needs image bytes, not paths (read them first)")
    header = json.dumps({"kind": record.kind, "location": record.location, "fields": record.fields,
                         "images": [[name, len(b)] for name, b in blobs]}).encode()
    return _MAGIC + struct.pack("<I", len(header)) + header + b"".join(b for _, b in blobs)


def decode_record(payload: bytes, location: str) -> RawRecord:
    if payload[:4] != _MAGIC:
        return RawRecord("unknown", location, {"error": "not a seedx_jax record (run seedx_jax.data.prepare)"}, {})
    (size,) = struct.unpack("<I", payload[4:8])
    header = json.loads(payload[8:8 + size])
    images, pos = {}, 8 + size
    for name, n in header["images"]:
        images[name] = payload[pos:pos + n]
        pos += n
    return RawRecord(header["kind"], header["location"], header["fields"], images)


class ArrayRecordReader:
    def __init__(self, paths: Sequence[str]):
        import grain

        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{missing[0]}: no such ArrayRecord shard")
        self._source = grain.sources.ArrayRecordDataSource(list(paths))
        self._paths = list(paths)

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, i: int) -> RawRecord:
        return decode_record(self._source[i], f"{self._paths[0] if len(self._paths) == 1 else 'array_record'}#{i}")


def open_source(fmt: str, paths: Sequence[str], image_dir: str = "", *, kind: str = "", data_dir: str = ""):
    """A random-access reader (`len`, `[i] -> RawRecord`) of `paths` in format `fmt`; the jsonl formats
    join relative image paths to `image_dir` (relative to the working directory, `~` expanded).
    Format "tfds": `paths` are `NAME[/CONFIG][:VERSION]:SPLIT` specs of TFDS datasets prepared in
    `data_dir` ("" = TFDS's default folder), read as records of `kind` (vqa | caption | edit).

    Raises:
      ValueError: an unknown format, no paths, a bad TFDS spec, or a TFDS dataset that cannot be read
        (`seedx_jax.data.tfds_source.TfdsError`).
      FileNotFoundError: a path or `image_dir` that does not exist.
    """
    if fmt not in FORMATS:
        raise ValueError(f"data format {fmt!r} is not one of {FORMATS}")
    if not paths:
        raise ValueError(f"data source of format {fmt!r} names no files")
    if fmt == "tfds":
        from seedx_jax.data.tfds_source import TfdsReader, parse_tfds_spec

        readers = [TfdsReader(*parse_tfds_spec(spec), data_dir, kind) for spec in paths]
        return readers[0] if len(readers) == 1 else Concat(readers)
    if fmt == "webdataset":
        return WebDatasetReader(paths)
    if fmt == "array_record":
        return ArrayRecordReader(paths)
    if image_dir.strip():  # a missing folder is one error here, not a skipped record per image later
        image_dir = resolve(image_dir)
        if not os.path.isdir(image_dir):
            raise FileNotFoundError(f"image_dir {image_dir}: no such folder")
    readers = [JsonlReader(p, KINDS[fmt], image_dir) for p in paths]
    return readers[0] if len(readers) == 1 else Concat(readers)


class Concat:
    def __init__(self, readers):
        self._readers = readers
        self._ends = np.cumsum([len(r) for r in readers])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, i: int) -> RawRecord:
        k = int(np.searchsorted(self._ends, i, side="right"))
        return self._readers[k][i - (int(self._ends[k - 1]) if k else 0)]
