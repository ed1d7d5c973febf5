"""`--data SOURCE` -> the items of a task: a benchmark file (`files`), a shapes-world split folder
(`shapes`), or `tfds:NAME[/CONFIG]:SPLIT` (`tfds_items`)."""
from __future__ import annotations

import os

from seedx_jax.evaluation import files, shapes
from seedx_jax.evaluation.runner import Source
from seedx_jax.outputs import output_kind
from seedx_jax.paths import display, resolve

TFDS_PREFIX = "tfds:"


def is_tfds(data: str) -> bool:
    return data.startswith(TFDS_PREFIX)


def data_inputs(data: str, images_dir: str | None = None, annotations: str | None = None) -> list[str]:
    """The files and folders a source reads (an output may not overlap them)."""
    return [] if is_tfds(data) else [p for p in (data, images_dir, annotations) if p]


def open_data(task: str, data: str, *, images_dir: str | None = None, annotations: str | None = None,
              tfds_data_dir: str | None = None) -> Source:
    """Every record of `data` for `task`, read and checked (no model needed).

    Raises:
      FileNotFoundError: no such file or folder.
      SourceFormatError: a source of a format `task` does not read.
      TfdsError: a TFDS dataset that is not installed, not prepared, or has no such split.
    """
    if is_tfds(data):
        from seedx_jax.data.tfds_source import open_tfds, parse_tfds_spec
        from seedx_jax.evaluation.tfds_items import read_tfds

        name, split = parse_tfds_spec(data[len(TFDS_PREFIX):])
        records, templates = read_tfds(task, f"{name}:{split}", open_tfds(name, split, tfds_data_dir))
        return Source(records, templates)
    path = resolve(data)
    if os.path.isdir(path):
        if output_kind(path) != "shapes_split":
            raise files.SourceFormatError(f"--data {data} is a folder; give a benchmark file (jsonl or json), a "
                                          "shapes-world split folder, or tfds:NAME:SPLIT")
        if task not in shapes.TASKS:
            raise files.SourceFormatError(f"--data {data} (the shapes world) has no {task} items; it has "
                                          f"{', '.join(shapes.TASKS)}")
        return Source(list(shapes.read_split(task, path)), shapes.TEMPLATES)
    if not os.path.exists(path):
        raise FileNotFoundError(f"--data {display(path)}: no such file or folder")
    return Source(files.read_file(task, path, images_dir=images_dir, annotations=annotations))
