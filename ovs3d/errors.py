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
