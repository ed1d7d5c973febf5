"""A run's directory: local, or a bucket URL such as gs://bucket/run.

Orbax and tensorboardX write URLs themselves (tensorboardX needs google-cloud-storage for gs://); our
own small files (metrics.jsonl, sample PNGs) go through etils.epath (gcsfs for gs://). Object stores
have no append and no rename, so a remote file is always written whole.
"""
from __future__ import annotations

import os


def is_remote(path: str) -> bool:
    return "://" in path


def resolve(workdir: str) -> str:
    """An absolute local path, or the URL as given."""
    return workdir if is_remote(workdir) else os.path.abspath(workdir)


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
