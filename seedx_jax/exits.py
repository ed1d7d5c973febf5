"""How the command-line tools end: one line, never a traceback, for what the user can fix.

* A user error (bad argument, missing or damaged file, a refused output folder): one line naming the
  input and the problem (`error_line`), exit 2.
* Ctrl-C (SIGINT) and SIGTERM become exceptions (`interrupts_as_exceptions`), so every `except` /
  `finally` on the way up removes what the run had half written; exit 128 + the signal number (130,
  143), as shells report it.
"""
from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from typing import Iterator


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `prog: error: message (see --help)`, exit 2 (argparse
    prints the whole usage block first). Sub-command parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread. A `KeyboardInterrupt` because asyncio (Orbax writes through
    an event loop) re-raises only those and `SystemExit` from its callbacks; any other exception raised
    by a signal handler there is logged and swallowed, and the conversion would go on."""


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block (SIGINT already raises `KeyboardInterrupt`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C / SIGTERM arriving inside the block are raised when it ends (in the main thread).

    For writes that Orbax hands to its own threads: an exception in the main thread would leave them
    writing into a partial folder that the cleanup is removing at the same moment (and can re-create
    it). Each deferred block is one bounded write, so the delay is short.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pending:
        signal.raise_signal(pending[0])  # through the handlers in place outside the block


def exit_code(err: BaseException) -> int:
    return 128 + (signal.SIGTERM if isinstance(err, Terminated) else signal.SIGINT)


def describe(err: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted (Ctrl-C)"


def error_line(err: BaseException) -> str:
    """The first line of `err`'s message; a file-system error as `<path>: <problem>`."""
    if isinstance(err, OSError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        return f"{where}: {err.strerror}" if where else err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
