"""Paths as users type them: relative to the working directory, with `~`, a trailing slash, through
symlinks, or a bucket URL (`gs://bucket/dir`).

Every path the package accepts goes through `resolve` first. Orbax needs absolute paths, and the
output policy (`seedx_jax.outputs`) compares paths after `real`, so a symlink or a `..` cannot hide
that an output folder is, contains or lies inside an input. Every path argument of the command-line
tools is parsed by `argument`: shells leave `'~/x'` and `--opt=~/x` unexpanded.
"""
from __future__ import annotations

import argparse
import os


def is_url(path: str | os.PathLike) -> bool:
    """A bucket or other URL (`gs://...`): handed to Orbax / etils.epath as given."""
    return "://" in os.fspath(path)


def expand(path: str | os.PathLike) -> str:
    """`path` with a leading `~` expanded (URLs unchanged); a relative path stays relative, so that
    messages show it as the user typed it."""
    text = os.fspath(path)
    return text if is_url(text) else os.path.expanduser(text)


def argument(text: str) -> str:
    """argparse `type=` of every path option and argument: `expand`, a blank path refused (an unset
    shell variable, most likely), naming the option."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return expand(text)


def resolve(path: str | os.PathLike) -> str:
    """An absolute local path (`~` expanded, `..` and a trailing slash removed, symlinks kept), or the
    URL without a trailing slash.

    Raises:
      ValueError: `path` is empty (an unset option or environment variable, most likely).
    """
    text = os.fspath(path)
    if not text.strip():
        raise ValueError("an empty path was given")
    if is_url(text):
        return text.rstrip("/") if not text.endswith("://") else text
    return os.path.abspath(expand(text))


def real(path: str | os.PathLike) -> str:
    """`resolve`, then symlinks followed (URLs unchanged): the path compared with others."""
    resolved = resolve(path)
    return resolved if is_url(resolved) else os.path.realpath(resolved)


def is_within(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether `path` is `root` or lies inside it (after `real`; a URL only inside a URL)."""
    path, root = real(path), real(root)
    if is_url(path) != is_url(root):
        return False
    return path == root or path.startswith(root.rstrip("/") + "/")


def display(path: str | os.PathLike) -> str:
    """`path` as short as it can be shown: relative to the working directory when inside it."""
    resolved = resolve(path)
    if is_url(resolved):
        return resolved
    relative = os.path.relpath(resolved)
    return relative if not relative.startswith("..") else resolved
