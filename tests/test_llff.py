"""LLFF loader on the real scenes (../shared/data): documented shapes, bounds scaling, annotations,
hold-out split and the spiral path."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import shared_scene
from ovs3d.scene.paths import spiral_path
from ovs3d.scene.load import load_scene
from ovs3d.scene.scene import holdout_split


@pytest.fixture(scope="module")
def fern():
    return load_scene(shared_scene("fern_504"))


@pytest.fixture(scope="module")
def statue():
    return load_scene(shared_scene("statue_504"))


def test_fern_shapes_and_bounds(fern):
    raw = np.load(fern.root / "poses_bounds.npy")
    h, w, f = raw[0, 4], raw[0, 9], raw[0, 14]  # the hwf column of the 3x5 matrix
    assert (h, w) == (378, 504)
    assert fern.images.shape == (20, 378, 504, 3) and fern.images.dtype == np.float32
    assert 0.0 <= fern.images.min() and fern.images.max() <= 1.0
    assert (fern.width, fern.height) == (504, 378)
    np.testing.assert_allclose(fern.cameras.fx.numpy(), f, rtol=1e-6)
    np.testing.assert_allclose(fern.cameras.cx.numpy(), 252.0)
    assert fern.cameras.c2w.shape == (20, 3, 4)
    assert fern.bounds.shape == (20, 2)
    assert fern.bounds.min() == pytest.approx(1 / 0.75, rel=1e-6)
    # every bound is divided by the same s = 0.75 * min(near)
    np.testing.assert_allclose(fern.bounds, raw[:, 15:] / (0.75 * raw[:, 15].min()), rtol=1e-5)
    assert fern.kind == "forward"
    assert fern.train_views == list(range(20)) and fern.test_views == []
    assert fern.annotations is None and fern.classes == []
    rot = fern.cameras.c2w[:, :, :3].double().numpy()
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)


def test_downsample_rescales_intrinsics():
    scene = load_scene(shared_scene("fern_504"), downsample=4)
    raw = np.load(scene.root / "poses_bounds.npy")
    assert scene.images.shape == (20, 94, 126, 3)  # (int(378 / 4), int(504 / 4))
    np.testing.assert_allclose(scene.cameras.fx.numpy(), raw[0, 14] * 126 / 504, rtol=1e-6)
    np.testing.assert_allclose(scene.cameras.fy.numpy(), raw[0, 14] * 94 / 378, rtol=1e-6)


def test_statue_annotations(statue):
    assert statue.images.shape == (29, 378, 504, 3)
    assert statue.classes == ["statue"]
    ann = statue.annotations
    assert ann.views == list(range(29))
    assert ann.labels.shape == (29, 378, 504, 1) and ann.labels.dtype == np.uint8
    assert set(np.unique(ann.labels)) == {0, 1}
    assert statue.bounds.min() == pytest.approx(1 / 0.75, rel=1e-6)


def test_holdout_every_eighth(statue):
    train, test = holdout_split(29, 8)
    assert test == [0, 8, 16, 24]
    assert train == [i for i in range(29) if i % 8 != 0]
    assert holdout_split(5, 0) == ([0, 1, 2, 3, 4], [])
    scene = load_scene(statue.root, downsample=8, holdout_every=8, load_annotations=False)
    assert scene.test_views == [0, 8, 16, 24] and len(scene.train_views) == 25
    assert scene.annotations is None


def test_spiral_path(fern):
    path = spiral_path(fern.cameras, fern.bounds)
    assert len(path) == 120
    assert (path.width, path.height) == (fern.width, fern.height)
    rot = path.c2w[:, :, :3].double().numpy()
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    # the spiral circles the average camera: its centre is near the (recentred) origin, and every
    # frame looks roughly the way the capture cameras look (-z)
    assert np.abs(path.centers.numpy().mean(0)).max() < 0.1
    assert (-path.c2w[:, 2, 2].numpy() < -0.9).all()
