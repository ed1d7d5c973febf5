"""SIGTERM (TPU preemption) and Ctrl-C in a training run: a flag the loop reads between steps, so the run
saves the step it finished and stops. Raising an exception instead would break off an XLA compile (a
segfault) or a device transfer (a traceback, no checkpoint), and one raised while JAX imports is lost
in a garbage-collector callback (the run goes on). `python -m seedx_jax.train` takes the signals over
from its start, and there a second Ctrl-C exits at once; `train()` takes them over for its run where
nobody did (a second Ctrl-C in a notebook must not kill the kernel).
"""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np

REASONS = {signal.SIGTERM: "preempted", signal.SIGINT: "interrupted"}
# `timeout -s INT` signals the command, then its whole process group: one interrupt arriving twice
SAME_INTERRUPT_S = 0.1
# a second Ctrl-C: what is saved so far stays (Orbax lists only complete checkpoints)
STOPPED_AT_ONCE = (b"seedx_jax.train: interrupted (Ctrl-C) again: stopped at once without saving; rerun the same "
                   b"command to resume from the newest complete checkpoint\n")


class StopSignal:
    """Inside the block SIGTERM and Ctrl-C set `signum` (the first one wins). With `exit_on_second_interrupt`
    a second Ctrl-C exits at once with one line, mid-compile too: Python runs signal handlers only between
    the main thread's bytecodes, so a thread reads each signal from the wakeup fd that the C-level
    handler writes to.

    Only signals whose handlers are still Python's defaults are taken over: a caller that installed its
    own (the demo's `interrupts_as_exceptions`) keeps them.
    """

    DEFAULTS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}

    def __init__(self, *, exit_on_second_interrupt: bool = False):
        self.exit_on_second_interrupt = exit_on_second_interrupt
        self.signum = 0
        self._previous: dict = {}
        self._wakeup: tuple[int, int] | None = None  # (the previous wakeup fd, ours)

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._previous = {sig: signal.signal(sig, self._handle) for sig, default in self.DEFAULTS.items()
                          if signal.getsignal(sig) is default}
        if self.exit_on_second_interrupt and signal.SIGINT in self._previous:
            read, write = os.pipe()
            os.set_blocking(write, False)  # set_wakeup_fd requires it
            self._wakeup = (signal.set_wakeup_fd(write, warn_on_full_buffer=False), write)
            threading.Thread(target=_exit_on_second_interrupt, args=(read,), daemon=True).start()
        return self

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def agreed(self, step: int, every: int) -> str | None:
        """"preempted" / "interrupted" when the run should stop now, else None. Single process: at once.
        Several: every `every` steps (a collective, so it waits for the step), all processes stop at the
        same step when any of them got a signal (SIGTERM's "preempted" wins over a Ctrl-C)."""
        import jax  # not at import: the CLI takes the signals over before JAX loads

        signum = self.signum
        if jax.process_count() > 1:
            if step % every:
                return None
            from jax.experimental import multihost_utils
            signum = int(multihost_utils.process_allgather(np.int32(signum)).max())
        return REASONS.get(signum)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        if self._wakeup is not None:
            previous, write = self._wakeup
            signal.set_wakeup_fd(previous)
            os.close(write)


def _exit_on_second_interrupt(read: int) -> None:
    first = None
    while chunk := os.read(read, 64):  # b"" once __exit__ closes the write end
        if signal.SIGINT not in chunk:
            continue
        now = time.monotonic()
        if first is None:
            first = now
        elif now - first > SAME_INTERRUPT_S:
            os.write(2, STOPPED_AT_ONCE)
            os._exit(128 + signal.SIGINT)
    os.close(read)
