"""COLMAP boundary: axis conversion, depth bounds, pose normalisation, and bird_360 read from sparse/0
against the same capture read from poses_bounds.npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import shared_scene
from scipy.spatial.transform import Rotation

from ovs3d.errors import InputError
from ovs3d.scene.colmap import colmap_to_ovs3d, ovs3d_to_colmap, point_depth_bounds
from ovs3d.scene.colmap_sfm import SparseModel
from ovs3d.scene.normalize import normalize_poses
from ovs3d.scene.load import load_scene


def random_c2w(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rot = Rotation.random(n, random_state=seed).as_matrix()
    return np.concatenate([rot, rng.normal(size=(n, 3, 1))], axis=2)


def orbit_c2w(n: int, radius: float = 3.0, height: float = 1.0) -> np.ndarray:
    """Cameras on a circle around the origin, looking at it, +y up (ovs3d axes)."""
    out = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        center = np.array([radius * np.sin(a), height, radius * np.cos(a)])
        back = center / np.linalg.norm(center)
        right = np.cross([0.0, 1.0, 0.0], back)
        right /= np.linalg.norm(right)
        out.append(np.stack([right, np.cross(back, right), back, center], axis=1))
    return np.stack(out)


def test_identity_colmap_pose_is_opengl_flip():
    c2w = colmap_to_ovs3d(np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)[None])
    np.testing.assert_allclose(c2w[0, :, :3], np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(c2w[0, :, 3], 0.0)


def test_axis_conversion_round_trips_and_keeps_centres():
    c2w = random_c2w(5, seed=0)
    w2c = ovs3d_to_colmap(c2w)
    np.testing.assert_allclose(colmap_to_ovs3d(w2c), c2w, atol=1e-12)
    # The camera centre C satisfies R C + t = 0 in COLMAP's world-to-camera form.
    np.testing.assert_allclose(np.einsum("nij,nj->ni", w2c[:, :, :3], c2w[:, :, 3]) + w2c[:, :, 3], 0.0, atol=1e-12)


def test_point_depth_bounds_are_percentiles_of_observed_depths():
    # One camera at the origin looking down +z (COLMAP), points at depths 1..100; it sees all, twice each.
    depths = np.arange(1.0, 101.0)
    points = np.stack([np.zeros(100), np.zeros(100), depths], axis=1)
    obs = np.array([(0, p) for p in range(100)] * 2)
    model = SparseModel(names=["a.png"], cam_from_world=np.concatenate([np.eye(3), np.zeros((3, 1))], 1)[None],
                        fx=np.ones(1), fy=np.ones(1), cx=np.ones(1), cy=np.ones(1), sizes=np.array([[2, 2]]),
                        models=["PINHOLE"], distortion=np.zeros(1), points=points, observations=obs)
    np.testing.assert_allclose(point_depth_bounds(model, Path("model")), [np.percentile(depths, [0.1, 99.9])])
    model.observations = np.zeros((0, 2), dtype=np.int64)
    with pytest.raises(InputError, match="observes no sparse point"):
        point_depth_bounds(model, Path("model"))


@pytest.mark.parametrize("kind", ["forward", "360"])
def test_normalisation_ignores_the_world_frame_and_is_idempotent(kind):
    """The same capture expressed in any similarity-transformed world frame normalises to the same cameras."""
    c2w = orbit_c2w(12) if kind == "360" else orbit_c2w(12)[:4]
    bounds = np.tile([[1.5, 6.0]], (len(c2w), 1))
    ref, ref_bounds = normalize_poses(c2w, bounds, kind)
    rot = Rotation.from_euler("xyz", [20, -50, 75], degrees=True).as_matrix()
    scale, shift = 3.7, np.array([1.0, -2.0, 5.0])
    moved = np.concatenate([rot @ c2w[:, :, :3], (scale * c2w[:, :, 3] @ rot.T + shift)[:, :, None]], axis=2)
    out, out_bounds = normalize_poses(moved, bounds * scale, kind)
    np.testing.assert_allclose(out, ref, atol=1e-9)
    np.testing.assert_allclose(out_bounds, ref_bounds, atol=1e-9)
    again, again_bounds = normalize_poses(ref, ref_bounds, kind)
    np.testing.assert_allclose(again, ref, atol=1e-9)
    np.testing.assert_allclose(again_bounds, ref_bounds, atol=1e-9)


def test_360_normalisation_centres_the_orbit_in_the_unit_sphere():
    c2w, _ = normalize_poses(orbit_c2w(16, radius=3.0, height=1.0), np.tile([[1.0, 5.0]], (16, 1)), "360")
    distances = np.linalg.norm(c2w[:, :, 3], axis=1)
    np.testing.assert_allclose(distances, 1.0, atol=1e-9)  # all on the orbit, the look-at centre at 0
    np.testing.assert_allclose(c2w[:, 1, 3], c2w[0, 1, 3], atol=1e-9)  # the orbit plane is horizontal (+y up)
    assert c2w[0, 1, 3] == pytest.approx(1.0 / np.sqrt(10.0), abs=1e-9)  # height 1 at radius 3, scaled by sqrt(10)


def test_bird_360_sparse_model_matches_poses_bounds(tmp_path):
    """bird_360's poses_bounds.npy was made from its sparse/0: same poses and bounds; intrinsics differ
    only because poses_bounds.npy holds the first image's focal length for every image."""
    bird = shared_scene("bird_360")
    colmap_only = tmp_path / "bird"
    colmap_only.mkdir()
    (colmap_only / "images").symlink_to(bird / "images")
    (colmap_only / "sparse").symlink_to(bird / "sparse")
    from_colmap = load_scene(colmap_only, downsample=8)
    from_llff = load_scene(bird, downsample=8)
    assert from_colmap.kind == from_llff.kind == "360"
    assert [p.name for p in from_colmap.image_paths] == [p.name for p in from_llff.image_paths]
    np.testing.assert_allclose(from_colmap.cameras.c2w.numpy(), from_llff.cameras.c2w.numpy(), atol=1e-5)
    np.testing.assert_allclose(from_colmap.bounds, from_llff.bounds, rtol=1e-5)
    assert float(from_colmap.cameras.fx[0]) == pytest.approx(float(from_llff.cameras.fx[0]), rel=1e-6)
    assert float((from_colmap.cameras.fx - from_llff.cameras.fx).abs().max()) > 1.0  # per-image focal kept
    np.testing.assert_array_equal(from_colmap.images, from_llff.images)
