"""Progress lines for long runs: named stages with timings and step counters from inside jitted loops.

Jitted loops call `report_step(i, total, label)` through `jax.debug.callback` when compiled with
progress on; the steps go to the reporter installed by `reporting(...)` (none: dropped). Output goes
to stderr so stdout stays machine-readable. On a terminal a counter rewrites its line (`\r`); in a log
(any other stream) it is whole lines, about one per tenth of the count plus the last step, so a log
holds no 10 KB line of overwritten counters.

An exception leaving a stage carries that stage's name (`stage_of`), so a command can say what ran out
of memory.
"""
from __future__ import annotations

import contextlib
import sys
import time
from typing import Iterator, TextIO

import jax

from seedx_jax.exits import raise_if_interrupted

_active: list["Progress"] = []
_STAGE = "seedx_jax_stage"  # the attribute of an exception naming the innermost stage it left


def stage_of(err: BaseException) -> str | None:
    """The name of the innermost `Progress.stage` that `err` was raised in (None: outside every stage)."""
    return getattr(err, _STAGE, None)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self._terminal = _is_terminal(self.stream)
        self._open_line = False  # a step counter is on the current line (terminal)
        self._last: tuple[int, int] | None = None  # (step, total) of the current counter (log)
        self._tenth = -1  # the tenth of the current count last written (log)
        self._unwritten: str | None = None  # its latest step when not written (log)

    def _write(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text)
            self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        raise_if_interrupted()
        start = time.perf_counter()
        self._write(f"{name} ...\n")
        try:
            yield
        except BaseException as err:
            self._end_counter()
            if stage_of(err) is None:
                setattr(err, _STAGE, name)
            raise
        raise_if_interrupted()
        self._end_counter()
        self._write(f"{name}: done in {time.perf_counter() - start:.1f} s\n")

    def step(self, i: int, total: int, label: str) -> None:
        line = f"  {label}: {i}/{total}"
        if self._terminal:
            self._open_line = i < total
            self._write("\r" + line + ("" if self._open_line else "\n"))
            return
        if self._last is None or total != self._last[1] or i <= self._last[0]:  # a new count
            self._tenth = -1
        self._last = (i, total)
        tenth = i * 10 // max(total, 1)
        if i >= total or tenth > self._tenth:
            self._write(line + "\n")
            self._tenth, self._unwritten = tenth, None
        else:
            self._unwritten = line

    def note(self, text: str) -> None:
        """A line of its own among step counters."""
        if self._open_line:
            self._write("\n")
            self._open_line = False
        self._write(text + "\n")

    def _end_counter(self) -> None:
        """A stage ends: a terminal's counter line is ended, a log gets the count's last step."""
        if self._open_line:
            self._write("\n")
        elif self._unwritten is not None:
            self._write(self._unwritten + "\n")
        self._open_line, self._last, self._unwritten = False, None, None


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
