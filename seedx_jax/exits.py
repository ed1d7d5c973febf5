"""How the command-line tools end: one line, never a traceback, for what the user can fix.

* A user error (bad argument, missing or damaged file, a refused output folder): one line naming the
  input and the problem (`error_line`), exit 2.
* Ctrl-C (SIGINT) and SIGTERM become exceptions (`interrupts_as_exceptions`), so every `except` /
  `finally` on the way up removes what the run had half written; exit 128 + the signal number (130,
  143), as shells report it. An interrupt that Python swallowed (see `raise_if_interrupted`) is raised
  again at the next stage boundary and before any output appears.
* `seedx-jax` starts through `command_line`, which imports the commands (JAX, Flax: a second or two)
  with Ctrl-C already reported as one line.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
from typing import Iterator

# Signals received inside `interrupts_as_exceptions`, whether or not their exception reached the run
_received: list[int] = []


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, `prog: error: message (see --help)`, exit 2 (argparse
    prints the whole usage block first). Sub-command parsers inherit it."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread. A `KeyboardInterrupt` because asyncio (Orbax writes through
    an event loop) re-raises only those and `SystemExit` from its callbacks; any other exception raised
    by a signal handler there is logged and swallowed, and the conversion would go on."""


def _interrupt(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def interrupts_as_exceptions() -> Iterator[None]:
    """Inside the block SIGINT raises `KeyboardInterrupt` and SIGTERM `Terminated`, and both are recorded
    for `raise_if_interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        _received.append(signum)
        raise _interrupt(signum)

    def unraisable(info):
        if not isinstance(info.exc_value, KeyboardInterrupt):  # ours are raised again by raise_if_interrupted
            hook(info)

    _received.clear()
    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        _received.clear()
        sys.unraisablehook = hook
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_if_interrupted() -> None:
    """Raise the interrupt received in `interrupts_as_exceptions` that did not stop the run.

    Python cannot raise an exception out of a garbage-collector callback or a finaliser: one raised there
    by the signal handler (JAX frees device buffers from such callbacks, often while weights load) is
    dropped and the run goes on. Progress stages and the output writers call this, so such a run stops
    at its next stage and never writes its outputs.

    Raises:
      KeyboardInterrupt / Terminated: a signal arrived.
    """
    if _received:
        raise _interrupt(_received[0])


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


def command_line(module: str = "seedx_jax.cli", prog: str = "seedx-jax") -> int:
    """The `seedx-jax` console script (and `python -m seedx_jax[.convert]`): imports `module`, then runs
    its `main()`; Ctrl-C or SIGTERM during the imports (JAX, Flax: a second or two) is one line and
    exit 130 / 143, as later on."""
    try:
        with interrupts_as_exceptions():
            main = importlib.import_module(module).main
            raise_if_interrupted()
    except KeyboardInterrupt as err:
        print(f"\n{prog}: {describe(err)}", file=sys.stderr)
        return exit_code(err)
    return main()
