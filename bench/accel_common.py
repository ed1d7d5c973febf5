"""Shared pieces of the accelerator suite (bench/accel_suite.py): device ceilings, the PyTorch device,
interleaved timing under a time budget, and the part's result file.

A part runs in its own process and writes what it measured so far after every row, so a part stopped
at its time limit still leaves its finished rows.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "bench")):
    if _path not in sys.path:  # the device machine runs the scripts from a plain checkout, not the venv
        sys.path.insert(0, _path)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# HBM bandwidth by `device_kind` prefix (vendor datasheets, bytes/s; longest match wins). The peak bf16
# FLOP/s come from the trainer's table (seedx_jax.train.metrics.PEAK_TFLOPS).
PEAK_BANDWIDTH = {"NVIDIA H100": 3.35e12, "NVIDIA H100 PCIe": 2.0e12, "NVIDIA H200": 4.8e12,
                  "NVIDIA A100": 2.0e12}


def _by_prefix(table: dict[str, float], kind: str) -> float | None:
    matches = [k for k in table if kind.startswith(k)]
    return table[max(matches, key=len)] if matches else None


def device_ceilings() -> dict:
    """The first JAX device: kind, platform, datasheet peak bf16 FLOP/s and HBM bytes/s (None if unknown)."""
    import jax

    from seedx_jax.train.metrics import peak_flops

    dev = jax.devices()[0]
    kind = getattr(dev, "device_kind", "")
    return dict(kind=kind, platform=dev.platform, jax=jax.__version__, peak_bf16_flops=peak_flops(dev),
                peak_bandwidth=_by_prefix(PEAK_BANDWIDTH, kind))


def torch_device(jax_platform: str) -> tuple[str | None, str]:
    """(torch device for the comparison rows or None, one line saying which and why).

    The comparison runs where JAX runs: CUDA beside a JAX GPU, the CPU beside a JAX CPU (smoke runs).
    """
    try:
        import torch
    except ImportError:
        return None, "torch is not installed: the PyTorch rows are skipped; ours still run"
    if jax_platform == "gpu":
        if not torch.cuda.is_available():
            return None, (f"torch {torch.__version__} has no CUDA: the PyTorch rows are skipped; ours still run")
        return "cuda", f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}"
    if jax_platform == "cpu":
        return "cpu", f"torch {torch.__version__} on the CPU"
    return None, f"JAX runs on {jax_platform}, which torch does not share: the PyTorch rows are skipped"


def torch_sync(device: str | None) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def to_numpy(tensor):
    """A torch tensor on any device -> numpy; bfloat16 goes through its bits (numpy has no bfloat16)."""
    import ml_dtypes
    import torch

    tensor = tensor.detach()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).cpu().numpy().view(ml_dtypes.bfloat16)
    return tensor.cpu().numpy()


def state_numpy(module) -> list:
    """`(key, numpy array)` of a torch module's state dict, for the seedx_jax key tables."""
    return [(k, to_numpy(v)) for k, v in module.state_dict().items()]


class Budget:
    """Seconds left of a part's time limit (`--budget`), so that a part can drop optional work."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def timed_interleaved(fns: dict[str, Callable[[], None]], repeats: int, budget: Budget,
                      reserve_s: float = 0.0) -> dict[str, dict]:
    """Time each synchronous `fn` (it must block until its device work is done) A/B-interleaved.

    Each fn runs once untimed-for-the-median first (its wall time is `first_s`: trace, compile and one
    run); then rounds of one call of each, in turn, until `repeats` rounds are done or a further round
    would eat into the last `reserve_s` seconds of `budget` (at least 2 rounds are kept, if time allows
    one). -> {name: {first_s, median_s, min_s, max_s, n}}.
    """
    out = {name: {"first_s": _wall(fn)} for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    round_s = 0.0
    for i in range(repeats):
        if i >= 2 and budget.left() - reserve_s < round_s:
            break
        start = time.monotonic()
        for name, fn in fns.items():
            samples[name].append(_wall(fn))
        round_s = time.monotonic() - start
    for name, times in samples.items():
        out[name].update(median_s=statistics.median(times), min_s=min(times), max_s=max(times), n=len(times))
    return out


def with_attention_fallback(build: Callable[[str], object], attention: str, rec: "Recorder"):
    """`(build(attention), attention)`, or `(build("xla"), "xla")` with a note when the device refuses the
    requested kernel (e.g. cuDNN attention on a GPU without it) while building or compiling."""
    if attention == "xla":
        return build("xla"), "xla"
    try:
        return build(attention), attention
    except Exception as err:  # noqa: BLE001 - any refusal: the part still measures with XLA's attention
        rec.note(f"attention_impl={attention!r} failed ({type(err).__name__}: {str(err)[:300]}); using 'xla'")
        return build("xla"), "xla"


def _wall(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Recorder:
    """A part's results: `rows` (the suite's table) and `details`, rewritten to `path` on every change."""

    def __init__(self, path: str, part: str):
        self.path, self.part = path, part
        self.data = {"part": part, "rows": [], "details": {}, "notes": []}
        self.save()

    def row(self, name: str, unit: str, ours: float | None, torch: float | None = None, *,
            achieved: float | None = None, ceiling: str = "", ours_compile_s: float | None = None,
            torch_first_s: float | None = None) -> None:
        """One line of the table. `ours` / `torch` are throughputs in `unit` (higher is better: ours/torch > 1
        means ours is faster); `achieved` is ours in FLOP/s (`ceiling="bf16_flops"`) or bytes/s
        (`ceiling="bandwidth"`), which the suite divides by the peak and by the measured ceiling."""
        ratio = ours / torch if ours and torch else None
        self.data["rows"].append(dict(part=self.part, name=name, unit=unit, ours=ours, torch=torch, ratio=ratio,
                                      achieved=achieved, ceiling=ceiling, ours_compile_s=ours_compile_s,
                                      torch_first_s=torch_first_s))
        self.save()

    def detail(self, key: str, value) -> None:
        self.data["details"][key] = value
        self.save()

    def note(self, line: str) -> None:
        print(f"[{self.part}] {line}", flush=True)
        self.data["notes"].append(line)
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1, default=float)
        os.replace(tmp, self.path)
