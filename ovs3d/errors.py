"""User-facing errors: every bad input names the file, the problem and the fix."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input, detected before any long computation starts.

    The message reads ``<path>: <problem>. Fix: <fix>`` so a user knows which file to change and how.
    """

    def __init__(self, path: str | Path | None, problem: str, fix: str):
        self.path = None if path is None else Path(path)
        self.problem = problem
        self.fix = fix
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}. Fix: {fix}")


class WeightsUnavailableError(RuntimeError):
    """Model weights are neither cached nor downloadable; the message names the model and the option."""


def excerpt(text: object, limit: int = 240) -> str:
    """``text`` on one line for quoting inside a message: whitespace runs collapsed and, when longer than
    ``limit`` characters, cut at the last word boundary before it with '...' appended (never mid-word)."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rstrip()
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space].rstrip(" ,;:")
    return f"{cut} ..."


def shown(text: str, limit: int = 80) -> str:
    """A user-written string (a class prompt, a file name) as a message shows it: quoted, invisible and
    control characters escaped, and a long one shortened with its length given."""
    quoted = repr(str(text))
    if len(quoted) <= limit:
        return quoted
    return f"{quoted[:limit - 5]}...{quoted[0]} ({len(text)} characters)"
