"""Smoke test of bench/bench_seedx.py: one tiny row end to end in a subprocess (no timing assertions)."""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "bench_seedx.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)


@pytest.mark.slow  # minutes of benchmarks are `make bench`; their option errors stay in the default suite
def test_tiny_vae_row_prints_the_tables_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = _run("--size", "tiny", "--only", "vae", "--pairs", "1", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "VAE decode 8x8 -> 16x16" in proc.stdout and "Must show (issue 20)" in proc.stdout
    assert "ceiling: matmul 256^3 fp32" in proc.stdout
    data = json.loads(out.read_text())
    (row,) = data["rows"]
    assert row["key"] == "vae" and len(row["torch_s"]) == len(row["jax_s"]) == 1
    assert row["jax_median_s"] > 0 and row["torch_median_s"] > 0 and row["flops"] > 0
    diff = float(row["check"].rsplit(" ", 1)[-1])
    assert diff < 1e-4  # both sides decode the same latents with the same weights
    assert data["ceiling"]["peak_fp32"] > 0 and data["ceiling"]["bandwidth"] > 0
    vae_item = next(it for it in data["must_show"] if "vae" in it["keys"])
    # the group also needs both U-Net rows: a measured miss still shows, a measured pass is only partial
    assert vae_item["verdict"] == ("MISS" if row["ratio_median"] < vae_item["target"] else "partial")
    assert all(it["verdict"] == "not measured" for it in data["must_show"] if "vae" not in it["keys"])


@pytest.mark.parametrize("args, message", [
    (["--pairs", "0"], "--pairs=0 must be >= 1"),
    (["--only", "nope"], "argument --only: invalid choice: 'nope'"),
    (["--size", "huge"], "argument --size: invalid choice: 'huge'"),
])
def test_bad_options_exit_2_with_one_line(args, message):
    proc = _run(*args)
    assert proc.returncode == 2 and message in proc.stderr
