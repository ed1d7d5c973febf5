"""Training observability: TensorBoard scalars and `metrics.jsonl` (process 0), a console progress
line with the same figures, and an MFU estimate from the compiled step's FLOP count.

MFU = (XLA's FLOP count of one step per device) / (step time x peak FLOP/s of the device). The peak is
looked up by device kind (dense bf16 figures) or given as `train.peak_tflops`; on a device with no
known peak (CPU) MFU is not reported.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

from seedx_jax.train.workdir import file_exists, is_remote, read_text, write_file

# dense bf16 TFLOP/s per chip / GPU, by `device_kind` prefix (longest match wins)
PEAK_TFLOPS = {"TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0,
               "TPU v6 lite": 918.0, "TPU v6e": 918.0, "NVIDIA H100": 989.0, "NVIDIA H200": 989.0,
               "NVIDIA A100": 312.0}


def peak_flops(device: jax.Device, override_tflops: float = 0.0) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    kind = getattr(device, "device_kind", "")
    matches = [k for k in PEAK_TFLOPS if kind.startswith(k)]
    return PEAK_TFLOPS[max(matches, key=len)] * 1e12 if matches else None


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call of an AOT-compiled step on one device (None when XLA does not say)."""
    try:
        cost = compiled.cost_analysis()
    except Exception:  # some backends do not implement it
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


class MetricsLog:
    """`log(step, scalars)` writes TensorBoard events under `<workdir>/tensorboard`, a line of
    `<workdir>/metrics.jsonl` and one console line; `say` writes the other progress lines."""

    # a remote metrics.jsonl is rewritten whole (no append on object stores), at most this often
    REMOTE_UPLOAD_S = 60.0

    def __init__(self, workdir: str, total_steps: int, *, stream=None, enabled: bool = True):
        self.total, self.stream = total_steps, stream or sys.stderr
        self.enabled = enabled
        self._writer = self._jsonl = None
        self._remote_lines: list[str] = []
        self._uploaded = time.monotonic()
        self._jsonl_path = f"{workdir.rstrip('/')}/metrics.jsonl"
        if enabled:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(f"{workdir.rstrip('/')}/tensorboard", flush_secs=30)
            if not is_remote(workdir):
                os.makedirs(workdir, exist_ok=True)
                self._jsonl = open(self._jsonl_path, "a")
            elif file_exists(self._jsonl_path):  # resumed: keep the earlier lines
                self._remote_lines = read_text(self._jsonl_path).splitlines(keepends=True)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in scalars.items():
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(name, value, step)
        line = json.dumps({"step": step, **{k: v for k, v in scalars.items() if math.isfinite(v)}}) + "\n"
        if self._jsonl is not None:
            self._jsonl.write(line)
            self._jsonl.flush()
        else:
            self._remote_lines.append(line)
            if time.monotonic() - self._uploaded > self.REMOTE_UPLOAD_S:
                self._upload()
        self.stream.write(self.line(step, scalars) + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """A progress line that is not a metric (a compile, the resume), on the console only."""
        if self.enabled:
            self.stream.write(text + "\n")
            self.stream.flush()

    def line(self, step: int, s: dict[str, float]) -> str:
        width = 20
        done = int(width * step / self.total)
        parts = [f"[{'=' * done}{' ' * (width - done)}] step {step}/{self.total}"]
        for name in sorted(k for k in s if k.startswith("loss")):
            parts.append(f"{name.split('/')[-1]} {s[name]:.4f}")
        fmt = {"train/lr": ("lr", "{:.2e}"), "train/grad_norm": ("gnorm", "{:.3f}"),
               "perf/tokens_per_s": ("tok/s", "{:.0f}"), "perf/images_per_s": ("img/s", "{:.1f}"),
               "perf/step_time_s": ("step", "{:.3f}s"), "perf/mfu": ("mfu", "{:.1%}"),
               "train/skipped_samples": ("skipped", "{:.0f}"), "train/nonfinite_steps": ("nonfinite", "{:.0f}")}
        for key, (label, f) in fmt.items():
            if s.get(key) is not None and math.isfinite(s[key]):
                parts.append(f"{label} {f.format(s[key])}")
        return "  ".join(parts)

    def _upload(self) -> None:
        write_file(self._jsonl_path, "".join(self._remote_lines).encode())
        self._uploaded = time.monotonic()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            if self._jsonl is not None:
                self._jsonl.close()
            else:
                self._upload()


class Throughput:
    """Steps, tokens and images since the last report and the wall time they took (measured between
    the host syncs of consecutive reports, so asynchronous dispatch is included)."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        """Start a fresh window now (e.g. after a compile)."""
        self._start, self.steps, self.tokens, self.images = time.perf_counter(), 0, 0.0, 0.0

    def add(self, tokens: float, images: float) -> None:
        self.steps, self.tokens, self.images = self.steps + 1, self.tokens + tokens, self.images + images

    def report(self, step_flops: float | None, peak: float | None) -> dict[str, float]:
        step_time = (time.perf_counter() - self._start) / max(self.steps, 1)
        scalars = {"perf/step_time_s": step_time,
                   "perf/tokens_per_s": self.tokens / max(self.steps, 1) / step_time,
                   "perf/images_per_s": self.images / max(self.steps, 1) / step_time,
                   "perf/mfu": step_flops / (step_time * peak) if step_flops and peak else math.nan}
        self.restart()
        return scalars
