"""Interleaved timing of the two sides of a row, and the row record the tables and the JSON file are made of.

Calls alternate torch / jax (the order flips every pair) so that a change in machine load hits both
sides alike; the first call of each side is timed apart (for jax: tracing + XLA compilation).
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Callable

Fn = Callable[[], object]


def _clock(fn: Fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclasses.dataclass
class Timings:
    """Seconds per call, by call name (`<side>:<label>`), one entry per pair; `first` the first call."""

    calls: dict[str, list[float]]
    first: dict[str, float]


def interleave(torch_calls: dict[str, Fn], jax_calls: dict[str, Fn], pairs: int, warmup: int = 1) -> Timings:
    """Time each labelled call `pairs` times, torch and jax alternating; labels are the same on both sides
    (e.g. a 1-token and a 64-token generation, to derive per-token times pair by pair)."""
    sides = [("torch", torch_calls), ("jax", jax_calls)]
    first = {f"{side}:{label}": _clock(fn) for side, calls in sides for label, fn in calls.items()}
    for _ in range(warmup - 1):
        for _, calls in sides:
            for fn in calls.values():
                fn()
    out: dict[str, list[float]] = {name: [] for name in first}
    for i in range(pairs):
        for side, calls in (sides if i % 2 == 0 else sides[::-1]):
            for label, fn in calls.items():
                out[f"{side}:{label}"].append(_clock(fn))
    return Timings(out, first)


@dataclasses.dataclass
class Row:
    """One hot path, both sides. `torch_s` / `jax_s`: seconds per unit (a call, or a token for decode rows),
    one value per interleaved pair. `flops`: model FLOPs of one unit (FLOP-bound rows); `bytes`: bytes one
    unit must read (bandwidth-bound rows)."""

    key: str
    name: str
    torch_s: list[float]
    jax_s: list[float]
    jax_compile_s: float = 0.0
    check: str = ""
    flops: float | None = None
    bytes: float | None = None
    note: str = ""
    left: str = "torch"  # what the ratio's numerator is ("torch", or e.g. "jax fp32" for A/B rows of ours)
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def ratios(self) -> list[float]:
        return [t / j for t, j in zip(self.torch_s, self.jax_s)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def summary(self, peak_flops: float | None, bandwidth: float | None) -> dict:
        med_t, med_j = statistics.median(self.torch_s), statistics.median(self.jax_s)
        out = dict(key=self.key, name=self.name, left=self.left, pairs=len(self.jax_s), torch_s=self.torch_s,
                   jax_s=self.jax_s, torch_median_s=med_t, torch_min_s=min(self.torch_s), jax_median_s=med_j,
                   jax_min_s=min(self.jax_s), ratio_median=self.ratio, ratio_min=min(self.ratios),
                   ratio_max=max(self.ratios), jax_compile_s=self.jax_compile_s, check=self.check, note=self.note,
                   flops=self.flops, bytes=self.bytes, **self.extra)
        if self.flops and peak_flops:
            out["jax_flops_per_s"] = self.flops / med_j
            out["ceiling_fraction"] = self.flops / med_j / peak_flops
        if self.bytes and bandwidth:
            out["ceiling_fraction"] = self.bytes / bandwidth / med_j
        return out


def first_call(fn: Fn) -> tuple[object, float]:
    """(result, seconds) of a call: for a fresh jax path, its tracing and compilation included."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def compile_time(first_s: float, timings: Timings, label: str) -> float:
    """A first jax call's seconds minus the median of the timed ones: tracing and compilation."""
    return first_s - statistics.median(timings.calls[f"jax:{label}"])
