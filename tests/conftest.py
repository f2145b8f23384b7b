"""Shared test fixtures: paths to the real scenes in ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_scene(name: str) -> Path:
    """Path of a real scene in ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real scene {name} not available: {path} is absent (it lives in ../shared beside the repo)")
    return path
