"""A run's directory: local, or a bucket URL such as gs://bucket/run.

Orbax and tensorboardX write URLs themselves (tensorboardX needs google-cloud-storage for gs://); our
own small files (metrics.jsonl, sample PNGs) go through etils.epath (gcsfs for gs://). Object stores
have no append and no rename, so a remote file is always written whole.
"""
from __future__ import annotations

import glob
import json
import os

from seedx_jax import paths
from seedx_jax.outputs import FORMAT, MANIFEST, output_kind


def is_remote(path: str) -> bool:
    return paths.is_url(path)


def resolve(workdir: str) -> str:
    """An absolute local path (`~` expanded), or the URL as given."""
    return paths.resolve(workdir)


class WorkdirError(ValueError):
    """A workdir the run may not use; the message names it and says why."""


def run_inputs(config) -> list[str]:
    """The files and folders a training config reads: the tokenizer, init checkpoints, data files."""
    found = [config.get("tokenizer", "")] + [p for p in config.init.values() if p]
    for source in config.data.sources.values():
        if source.format == "tfds":  # paths are dataset specs; the prepared files live in data_dir
            found.append(source.get("data_dir", ""))
            continue
        for pattern in source.paths.split(","):
            if pattern.strip():
                found += glob.glob(os.path.expanduser(pattern.strip()))
        found.append(source.get("image_dir", ""))
    return [p for p in found if p]


def check_workdir(workdir: str, config) -> None:
    """A workdir is new, empty, or a run of ours of the same stage (which then resumes); it never holds,
    and never lies inside, what the run reads (`seedx_jax.outputs` policy: we never write into, or
    later delete from, a folder of someone else's files).

    Raises:
      WorkdirError: one line naming the workdir and the problem.
    """
    where = resolve(workdir)
    for item in run_inputs(config):
        if paths.is_url(item) or paths.is_url(where):
            continue
        if paths.is_within(where, item) or paths.is_within(item, where):
            relation = "lies inside" if paths.is_within(where, item) else "contains"
            raise WorkdirError(f"--workdir {workdir} {relation} the input {paths.display(item)}; choose another folder")
    manifest = f"{where}/{MANIFEST}"
    if is_remote(where):
        kind = "train_run" if file_exists(manifest) else None
        if kind is None:
            return  # a bucket prefix: nothing of ours yet
    else:
        if os.path.lexists(where) and not os.path.isdir(where):
            raise WorkdirError(f"--workdir {workdir} is a file, not a folder")
        if not os.path.isdir(where) or not os.listdir(where):
            return
        kind = output_kind(where)
        if kind is None:
            raise WorkdirError(f"--workdir {workdir} holds files that are not a seedx_jax training run "
                               f"({', '.join(sorted(os.listdir(where))[:3])}); choose a new or empty folder")
        if kind != "train_run":
            raise WorkdirError(f"--workdir {workdir} holds a seedx_jax {kind} output, not a training run")
    if file_exists(manifest):
        stage = json.loads(read_text(manifest)).get("stage")
        if stage != config.stage:
            raise WorkdirError(f"--workdir {workdir} holds a {stage} run; config.stage is {config.stage}")


def mark_workdir(workdir: str, stage: str) -> None:
    """`<workdir>/manifest.json`: this folder is a seedx_jax training run of `stage`."""
    manifest = f"{resolve(workdir)}/{MANIFEST}"
    if not file_exists(manifest):
        from seedx_jax import __version__

        write_file(manifest, json.dumps({"format": FORMAT, "kind": "train_run", "stage": stage,
                                         "seedx_jax_version": __version__}, indent=1).encode())


def write_file(path: str, data: bytes) -> None:
    """The whole file at once: locally through a temporary name and a rename, so readers never see
    half of it; remotely as one object upload (atomic on GCS)."""
    if is_remote(path):
        from etils import epath

        epath.Path(path).write_bytes(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def file_exists(path: str) -> bool:
    if is_remote(path):
        from etils import epath

        return epath.Path(path).exists()
    return os.path.exists(path)


def read_text(path: str) -> str:
    if is_remote(path):
        from etils import epath

        return epath.Path(path).read_text()
    with open(path) as f:
        return f.read()
