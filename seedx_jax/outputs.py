"""The output policy of every writer: never delete what we did not create.

Writers (`seedx-jax convert | export`, `save_model`, `save_pipeline`, the demo, `data.prepare`, the
`seedx-jax` commands' `--out` files, training workdirs) all follow these rules:

1. A target that is an existing file, or that is, contains or lies inside an input of the same run
   (a source checkpoint, a data file, the tokenizer), is refused, with or without `overwrite`.
2. An existing non-empty directory is replaced only when it is our own output of the same kind and
   `overwrite` is given. Our outputs carry a marker: `manifest.json` with a `seedx_jax/` format and a
   `kind`, `seedx.json` (a pipeline) or `release.json` (a converted release). A directory we did not
   write is never replaced or deleted, whatever the flags.
3. Writes are atomic: the output is built in a sibling `<name>.partial-<host>-<pid>-<tag>` and renamed
   into place when complete; an error or an interrupt removes it. Partial siblings left by a killed
   process of this host (kill -9, a power cut) are removed by the next write of the same target, which
   says so; those of live processes or other hosts are only reported.
4. Directories and files are created with the permissions the umask allows.

Every refusal is an `OutputError` (a `ValueError`) with one line naming the path and the problem.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import socket
import sys
from typing import Iterable, Iterator

from seedx_jax import paths
from seedx_jax.exits import raise_if_interrupted

FORMAT = "seedx_jax/1"
MANIFEST = "manifest.json"  # model checkpoints, tokenizers, exports, demo reports, training runs
PIPELINE_MANIFEST = "seedx.json"
RELEASE_MANIFEST = "release.json"

_tags = itertools.count()


def _say(message: str) -> None:
    """A note for the user on stderr (not `logging`: it must show whatever the logging setup)."""
    print(message, file=sys.stderr)


class OutputError(ValueError):
    """An output path that cannot be written; the message names it and says why."""


def write_marker(path: str, kind: str, **fields) -> None:
    """`path/manifest.json` saying that `path` is a seedx_jax output of `kind`."""
    from seedx_jax import __version__

    with open(os.path.join(path, MANIFEST), "w") as f:
        json.dump({"format": FORMAT, "kind": kind, **fields, "seedx_jax_version": __version__}, f, indent=1)


def output_kind(path: str) -> str | None:
    """The kind of seedx_jax output the directory `path` holds (`"vit"`, `"pipeline"`, `"release"`,
    `"train_run"`, ...), or None when it holds no marker of ours."""
    if os.path.isfile(os.path.join(path, PIPELINE_MANIFEST)):
        return "pipeline"
    if os.path.isfile(os.path.join(path, RELEASE_MANIFEST)):
        return "release"
    try:
        with open(os.path.join(path, MANIFEST)) as f:
            manifest = json.load(f)
        if isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("seedx_jax/"):
            return str(manifest.get("kind"))
    except (OSError, ValueError):
        pass
    # training runs written before the marker existed: Orbax step folders and our metrics log
    if os.path.isfile(os.path.join(path, "metrics.jsonl")) or os.path.isdir(os.path.join(path, "checkpoints")):
        return "train_run"
    return None


def check_target(path: str, kind: str, *, inputs: Iterable[str] = (), overwrite: bool = False,
                 name: str = "--out") -> str:
    """The resolved target directory of an output of `kind`, if the policy allows writing it.

    Args:
      path: the target as the user typed it.
      kind: what will be written there (the marker kind).
      inputs: files and folders the run reads; the target may not be, contain or lie inside one.
      overwrite: replace our own existing output of the same kind.
      name: how the user gave `path` (a flag or argument name), for the message.

    Raises:
      OutputError: the target is a file, overlaps an input, or is a non-empty directory that is not
        our output of `kind` (or is, but `overwrite` was not given).
    """
    target = paths.resolve(path)
    if paths.is_url(target):
        raise OutputError(f"{name} {path}: writing to a URL is not supported here; write locally, then copy "
                          "it (e.g. `gcloud storage cp -r`)")
    shown = f"{name} {path}"
    for item in inputs:
        if paths.is_url(item):
            continue
        if paths.is_within(target, item):
            where = "is" if paths.real(target) == paths.real(item) else "lies inside"
            raise OutputError(f"{shown} {where} the input {paths.display(item)}; choose another output folder")
        if paths.is_within(item, target):
            raise OutputError(f"{shown} contains the input {paths.display(item)}; choose another output folder")
    if os.path.lexists(target) and not os.path.isdir(target):
        raise OutputError(f"{shown} is a file, not a folder")
    if os.path.isdir(target) and os.listdir(target):
        found = output_kind(target)
        if found is None:
            raise OutputError(f"{shown} is a folder that holds other files ({_some(target)}); seedx_jax never "
                              "replaces what it did not write: choose a new or empty folder")
        if found != kind:
            raise OutputError(f"{shown} holds {with_article(found)} output, not {with_article(kind)}; choose "
                              "another folder")
        if not overwrite:
            flag = "--overwrite" if name.startswith("--") else "overwrite=True"  # a command's option or an API's
            raise OutputError(f"{shown} already holds {with_article(kind)} output; pass {flag} to replace it")
    return target


def with_article(kind: str) -> str:
    """`kind` after "a" or "an", for messages naming the kinds of outputs and checkpoints."""
    vowel = kind.strip("'")[:1].lower() in tuple("aeiou")  # a kind may be shown quoted, as its repr()
    return f"{'an' if vowel else 'a'} {kind}"


def _some(folder: str, n: int = 3) -> str:
    names = sorted(os.listdir(folder))
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


# --------------------------------------------------------------------------------------------------
# Partial outputs

_PARTIAL = re.compile(r"\.(?:partial|replaced)-(?P<host>.+)-(?P<pid>\d+)-(?P<tag>[0-9]+)")


def _partial_name(target: str, what: str = "partial") -> str:
    return f"{target}.{what}-{socket.gethostname()}-{os.getpid()}-{next(_tags)}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_partials(target: str) -> list[str]:
    """Remove the partial siblings of `target` that dead processes of this host left; report the rest.
    Returns the paths removed."""
    parent, base = os.path.split(target)
    removed = []
    try:
        siblings = sorted(os.listdir(parent))
    except OSError:
        return removed
    for entry in siblings:
        if not entry.startswith(base + ".partial-") and not entry.startswith(base + ".replaced-"):
            continue
        path = os.path.join(parent, entry)
        match = _PARTIAL.match(entry[len(base):])
        if match is None:
            _say(f"{paths.display(path)}: a partial output of an earlier seedx_jax version; delete it if nothing "
                 f"is writing {paths.display(target)}")
        elif match["host"] != socket.gethostname():
            _say(f"{paths.display(path)}: a partial output being written, or left, by process {match['pid']} on "
                 f"host {match['host']}")
        elif int(match["pid"]) != os.getpid() and not _alive(int(match["pid"])):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            removed.append(path)
            _say(f"removed {paths.display(path)}, left by an interrupted run (process {match['pid']})")
        elif int(match["pid"]) != os.getpid():
            raise OutputError(f"{paths.display(target)} is being written by process {match['pid']} "
                              f"({paths.display(path)}); wait for it or stop it")
    return removed


def _move_into_place(tmp: str, target: str) -> None:
    if not os.path.isdir(target):
        os.rename(tmp, target)
    elif not os.listdir(target):  # the user's empty folder stays (its owner and permissions with it)
        for entry in os.listdir(tmp):
            os.rename(os.path.join(tmp, entry), os.path.join(target, entry))
        os.rmdir(tmp)
    else:  # our earlier output (check_target made sure)
        old = _partial_name(target, "replaced")
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old)


def _remove_partial(tmp: str) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    parent, base = os.path.split(tmp)
    for entry in os.listdir(parent):  # Orbax's partial-save sessions beside it
        if entry.startswith(base + ".partial_save"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _make_parents(target: str, name: str) -> list[str]:
    """Create the missing parents of `target` -> those created (deepest last)."""
    missing, parent = [], os.path.dirname(target)
    while not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise OutputError(f"{name} {paths.display(target)}: {paths.display(parent)} is a file, not a folder")
        missing.append(parent)
        parent = os.path.dirname(parent)
    for folder in reversed(missing):
        try:
            os.mkdir(folder)
        except OSError as err:
            raise OutputError(f"{name} {paths.display(target)}: cannot create {paths.display(folder)} "
                              f"({err.strerror})") from None
    return list(reversed(missing))


def _remove_empty(folders: list[str]) -> None:
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


@contextlib.contextmanager
def atomic_output(path: str, kind: str, *, inputs: Iterable[str] = (), overwrite: bool = False,
                  create: bool = True, name: str = "--out") -> Iterator[str]:
    """Yield a fresh partial sibling of the target (created, or only named when `create` is False, for
    writers that create it themselves); when the block succeeds it becomes the target, replacing our
    previous output when `overwrite` allows; on any error or interrupt it is removed, with any parent
    folder this call created. The writer must leave its marker (`write_marker`, or a pipeline or
    release manifest) in it.

    Raises:
      OutputError: as `check_target`, or the target's folder cannot be written.
    """
    target = check_target(path, kind, inputs=inputs, overwrite=overwrite, name=name)
    made = _make_parents(target, name)
    clean_stale_partials(target)
    tmp = _partial_name(target)
    try:  # one block from the mkdir on: Ctrl-C right after it must still remove the partial folder
        try:
            os.mkdir(tmp)
            if not create:
                os.rmdir(tmp)
        except OSError as err:
            raise OutputError(f"{name} {paths.display(target)}: cannot write in "
                              f"{paths.display(os.path.dirname(target))} ({err.strerror})") from None
        yield tmp
        raise_if_interrupted()
        _move_into_place(tmp, target)
    except BaseException:
        _remove_partial(tmp)
        _remove_empty(made)
        raise


# --------------------------------------------------------------------------------------------------
# Files in a collection folder (the `seedx-jax` commands' --out)


class OutputFiles:
    """The files one command run writes into a folder that collects many runs (`--out outputs`):
    `<prefix>.json` (the run's record, listing its files) and images named after the prefix.

    Files are written under partial names and appear together at `commit`; `abort` removes them (and
    the folder, when this run created it). An earlier run with the same prefix is replaced only with
    `overwrite` (its recorded files are removed at commit); a file of that name that no record of ours
    lists is never touched.
    """

    def __init__(self, folder: str, prefix: str, *, inputs: Iterable[str] = (), overwrite: bool = False):
        self.folder = paths.resolve(folder)
        self.prefix = prefix
        self.record_path = os.path.join(self.folder, prefix + ".json")
        self.pending: list[tuple[str, str]] = []  # (partial, final)
        self.previous: list[str] = []
        self.inputs = [paths.real(p) for p in inputs if not paths.is_url(p)]
        if os.path.sep in prefix or prefix in ("", ".", ".."):
            raise OutputError(f"--name {prefix!r}: a file name prefix, without folders")
        for item in inputs:
            if not paths.is_url(item) and os.path.isdir(item) and paths.is_within(self.folder, item):
                raise OutputError(f"--out {folder} lies inside the input {paths.display(item)}; choose another folder")
        if os.path.lexists(self.folder) and not os.path.isdir(self.folder):
            raise OutputError(f"--out {folder} is a file, not a folder")
        existing = self._existing()
        if existing:
            recorded = self._recorded()
            foreign = [f for f in existing if f not in recorded]
            if foreign:
                raise OutputError(f"--out {folder}: {os.path.basename(foreign[0])} exists and is not a recorded output "
                                  "of seedx-jax; choose another --name or --out")
            if not overwrite:
                raise OutputError(f"--out {folder}: {prefix}.json holds an earlier run; pass --overwrite to replace "
                                  "its files, or choose another --name")
            self.previous = existing
        self.made = _make_parents(os.path.join(self.folder, prefix), "--out")
        if not os.path.isdir(self.folder):
            try:
                os.mkdir(self.folder)
            except OSError as err:
                _remove_empty(self.made)
                raise OutputError(f"--out {folder}: cannot create the folder ({err.strerror})") from None
            self.made.append(self.folder)
        if not os.access(self.folder, os.W_OK | os.X_OK):
            _remove_empty(self.made)
            raise OutputError(f"--out {folder}: the folder is not writable")

    def _existing(self) -> list[str]:
        if not os.path.isdir(self.folder):
            return []
        pattern = re.compile(re.escape(self.prefix) + r"(\.json|\.png|-.*\.png)")
        return sorted(os.path.join(self.folder, f) for f in os.listdir(self.folder) if pattern.fullmatch(f))

    def _recorded(self) -> set[str]:
        try:
            with open(self.record_path) as f:
                record = json.load(f)
            outputs = [os.path.join(self.folder, os.path.basename(p)) for p in record.get("outputs", [])]
        except (OSError, ValueError, AttributeError, TypeError):
            return set()
        return {self.record_path, *outputs}

    def path(self, suffix: str) -> str:
        """The final path of `<prefix><suffix>` (e.g. `"-turn1-0.png"`); refused when it is an input."""
        final = os.path.join(self.folder, self.prefix + suffix)
        if paths.real(final) in self.inputs:
            raise OutputError(f"--out/--name would overwrite the input {paths.display(final)}")
        return final

    def write(self, suffix: str, write) -> str:
        """Write `<prefix><suffix>` through `write(partial_path)`; it appears at `commit` -> its final path."""
        final = self.path(suffix)
        partial = _partial_name(final)
        try:
            write(partial)
            os.chmod(partial, 0o666 & ~umask())
        except BaseException:
            with contextlib.suppress(OSError):
                os.remove(partial)
            raise
        self.pending.append((partial, final))
        return final

    def commit(self) -> list[str]:
        raise_if_interrupted()
        for old in self.previous:
            with contextlib.suppress(FileNotFoundError):
                os.remove(old)
        for partial, final in self.pending:
            os.replace(partial, final)
        done = [final for _, final in self.pending]
        self.pending = []
        return done

    def abort(self) -> None:
        for partial, _ in self.pending:
            with contextlib.suppress(OSError):
                os.remove(partial)
        self.pending = []
        _remove_empty(self.made)


def umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it races with threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
