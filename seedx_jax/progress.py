"""Progress lines for long runs: named stages with timings and step counters from inside jitted loops.

Jitted loops call `report_step(i, total, label)` through `jax.debug.callback` when compiled with
progress on; the steps go to the reporter installed by `reporting(...)` (none: dropped). Output goes
to stderr so stdout stays machine-readable.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, TextIO

import jax

_active: list["Progress"] = []


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._open_line = False  # a step counter is on the current line

    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text)
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        self._write(f"{name} ...\n")
        yield
        if self._open_line:
            self._write("\n")
            self._open_line = False
        self._write(f"{name}: done in {time.perf_counter() - start:.1f} s\n")

    def step(self, i: int, total: int, label: str) -> None:
        self._open_line = i < total
        self._write(f"\r  {label}: {i}/{total}" + ("" if self._open_line else "\n"))


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    _active.append(progress)
    try:
        yield progress
    finally:
        _active.pop()


def report_step(i, total: int, label: str) -> None:
    """Call inside a jitted loop (`i` may be traced): host callback to the active reporter."""
    def emit(step):
        if _active:
            _active[-1].step(int(step), total, label)

    jax.debug.callback(emit, i)
