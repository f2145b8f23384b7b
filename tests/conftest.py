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


SYNTHETIC_FIXTURE = dict(seed=0, n_views=16, width=96, height=72, n_annotated=4, supersample=2)
"""Size of the session's synthetic scene (views 0, 5, 10, 15 annotated; about 2 s to render)."""


@pytest.fixture(scope="session")
def synthetic_scene(tmp_path_factory) -> Path:
    """Path of a small synthetic scene (``ovs3d.scene.synthetic``, seed 0, 16 views at 96x72, 7 classes,
    exact depth in ``depth/``), rendered once per test session. Treat it as read-only: copy it to
    modify it."""
    from ovs3d.scene.synthetic import make_synthetic_scene

    return make_synthetic_scene(tmp_path_factory.mktemp("synthetic") / "scene", **SYNTHETIC_FIXTURE)


@pytest.fixture(autouse=True, scope="session")
def calibration_in_a_temporary_file(tmp_path_factory):
    """Encoder batch-size calibrations (features/calibrate.py) go to a session file, not ~/.cache."""
    from ovs3d.features import calibrate

    path = tmp_path_factory.mktemp("calibration") / "calibration.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(calibrate, "store_path", lambda: path)
        yield path
