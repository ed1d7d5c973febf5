"""The results file a benchmark writes at its end, checked before anything runs (a run lost at its last line
costs minutes, on a GPU lent device time)."""
from __future__ import annotations

import os


def output_file_problem(path: str) -> str | None:
    """None if a results file can be written at `path`, else why not (one phrase)."""
    if not path:
        return "is empty; give a file path"
    if os.path.isdir(path):
        return "is a folder; give a file path"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"is in a folder that does not exist ({folder})"
    if not os.access(folder, os.W_OK):
        return f"is in a folder this user cannot write ({folder})"
    return None
