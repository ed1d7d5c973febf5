"""Run directories in a bucket (gs://...): our own files go through etils.epath and are written whole,
since object stores have no append. GCS is replaced by a local folder here (no network in tests)."""
import json
import os

import pytest

from seedx_jax.train import workdir
from seedx_jax.train.metrics import MetricsLog


class BucketPath:
    """etils.epath.Path for gs://bucket/... kept in a local folder: whole-object writes only."""

    root = None

    def __init__(self, url: str):
        assert url.startswith("gs://bucket/"), url
        self.local = os.path.join(self.root, url[len("gs://bucket/"):])

    def write_bytes(self, data: bytes) -> None:
        os.makedirs(os.path.dirname(self.local), exist_ok=True)
        with open(self.local, "wb") as f:
            f.write(data)

    def exists(self) -> bool:
        return os.path.exists(self.local)

    def read_text(self) -> str:
        return open(self.local).read()


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    from etils import epath
    import tensorboardX

    monkeypatch.setattr(BucketPath, "root", str(tmp_path / "bucket"))
    monkeypatch.setattr(epath, "Path", BucketPath)
    events = []  # tensorboardX writes gs:// itself (google-cloud-storage); recorded here instead
    monkeypatch.setattr(tensorboardX, "SummaryWriter", lambda logdir, **kw: type("W", (), {
        "add_scalar": lambda self, *a: events.append((logdir, *a)), "close": lambda self: None})())
    return tmp_path / "bucket", events


def test_remote_metrics_are_uploaded_whole_and_kept_on_resume(bucket, tmp_path, monkeypatch):
    root, events = bucket
    monkeypatch.chdir(tmp_path)  # a URL mistaken for a local path would appear here
    log = MetricsLog("gs://bucket/run", 4, stream=open(os.devnull, "w"))
    log.log(1, {"loss/loss": 2.0})
    log.log(2, {"loss/loss": 1.5})
    assert not (root / "run" / "metrics.jsonl").exists()  # buffered: one upload per minute at most
    log.close()
    resumed = MetricsLog("gs://bucket/run", 4, stream=open(os.devnull, "w"))
    resumed.log(3, {"loss/loss": 1.0})
    resumed.close()
    lines = [json.loads(line) for line in open(root / "run" / "metrics.jsonl")]
    assert [(r["step"], r["loss/loss"]) for r in lines] == [(1, 2.0), (2, 1.5), (3, 1.0)]
    assert events[0] == ("gs://bucket/run/tensorboard", "loss/loss", 2.0, 1)
    assert not os.path.exists("gs:")  # nothing written to a local folder named after the URL


def test_local_files_appear_only_complete(tmp_path):
    path = str(tmp_path / "samples" / "step_1.png")
    workdir.write_file(path, b"png bytes")
    assert open(path, "rb").read() == b"png bytes" and os.listdir(tmp_path / "samples") == ["step_1.png"]
    assert workdir.resolve("gs://bucket/run") == "gs://bucket/run"
    assert workdir.resolve("rel/run") == os.path.abspath("rel/run")
