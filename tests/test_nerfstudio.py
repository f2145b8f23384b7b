"""transforms.json: exact write/read round trip, Blender conventions, scene loading (with and without
annotations) and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ovs3d.errors import InputError
from ovs3d.io.images import write_png
from ovs3d.scene.nerfstudio import read_transforms, write_transforms
from ovs3d.scene.load import load_scene

W, H = 16, 12


def orbit_c2w(n: int) -> np.ndarray:
    """n cameras on a horizontal circle of radius 4 at height 1, looking at the origin (OpenGL axes)."""
    out = []
    for a in np.linspace(0, 2 * np.pi, n, endpoint=False):
        center = np.array([4 * np.sin(a), 1.0, 4 * np.cos(a)])
        back = center / np.linalg.norm(center)
        right = np.cross([0.0, 1.0, 0.0], back)
        right /= np.linalg.norm(right)
        out.append(np.stack([right, np.cross(back, right), back, center], axis=1))
    return np.stack(out)


def make_images(root: Path, n: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / "images" / f"{i:03d}.png"
        write_png(path, rng.random((H, W, 3)).astype(np.float32))
        paths.append(path)
    return paths


@pytest.mark.parametrize("shared", [True, False])
def test_write_then_read_reproduces_cameras(tmp_path, shared):
    paths = make_images(tmp_path, 5)
    rng = np.random.default_rng(1)
    c2w = np.concatenate([Rotation.random(5, random_state=2).as_matrix(), rng.normal(size=(5, 3, 1))], axis=2)
    intrinsics = np.tile([[20.0, 21.0, 8.5, 6.25]], (5, 1))
    if not shared:
        intrinsics = intrinsics + rng.random((5, 4))
    bounds = np.sort(rng.random((5, 2)) * 5 + 0.1, axis=1)
    write_transforms(tmp_path / "transforms.json", paths, c2w, intrinsics, (W, H), bounds)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    assert ("fl_x" in meta) == shared and meta["frames"][0]["file_path"] == "images/000.png"
    back = read_transforms(tmp_path / "transforms.json")
    assert back.paths == paths and back.size == (W, H)
    np.testing.assert_allclose(back.c2w, c2w, atol=1e-12)
    np.testing.assert_allclose(back.intrinsics, intrinsics, atol=1e-12)
    np.testing.assert_allclose(back.bounds, bounds, atol=1e-12)


def test_blender_camera_angle_and_extensionless_paths(tmp_path):
    make_images(tmp_path, 4)
    c2w = orbit_c2w(4)
    frames = [{"file_path": f"./images/{i:03d}", "transform_matrix": np.vstack([c2w[i], [0, 0, 0, 1]]).tolist()}
              for i in range(4)]
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    data = read_transforms(tmp_path / "transforms.json")
    focal = 0.5 * W / math.tan(0.4)
    np.testing.assert_allclose(data.intrinsics, np.tile([[focal, focal, W / 2, H / 2]], (4, 1)))
    assert data.bounds is None and data.paths[0].name == "000.png"
    with pytest.warns(UserWarning, match="no near/far"):
        scene = load_scene(tmp_path)
    # The orbit converges on the origin at depth sqrt(17): bounds from the layout, in normalised units.
    np.testing.assert_allclose(scene.bounds, np.tile([[0.1, 10.0]], (4, 1)), rtol=1e-5)
    assert scene.kind == "360"


@pytest.mark.parametrize("n_views", [3, 8])
def test_scene_written_from_loaded_cameras_loads_identically(tmp_path, n_views):
    """Loaded (normalised) cameras written to transforms.json and read back give the same scene cameras."""
    first, second = tmp_path / "a", tmp_path / "b"
    paths = make_images(first, n_views)
    c2w = orbit_c2w(8)[:n_views]  # 3 views: a forward-facing arc; 8: a full orbit
    intrinsics = np.tile([[18.0, 18.0, W / 2, H / 2]], (n_views, 1))
    write_transforms(first / "transforms.json", paths, c2w, intrinsics, (W, H), np.tile([[2.0, 6.0]], (n_views, 1)))
    scene = load_scene(first)
    assert scene.kind == ("forward" if n_views == 3 else "360")
    cams = scene.cameras
    k = np.stack([cams.fx.numpy(), cams.fy.numpy(), cams.cx.numpy(), cams.cy.numpy()], axis=1)
    write_transforms(second / "transforms.json", scene.image_paths, cams.c2w.numpy(), k, (W, H), scene.bounds)
    again = load_scene(second)
    np.testing.assert_allclose(again.cameras.c2w.numpy(), cams.c2w.numpy(), atol=1e-6)
    np.testing.assert_allclose(again.cameras.fx.numpy(), cams.fx.numpy())
    np.testing.assert_allclose(again.bounds, scene.bounds, rtol=1e-6)
    np.testing.assert_array_equal(again.images, scene.images)


def test_scene_without_annotations_or_with_classes_only(tmp_path):
    paths = make_images(tmp_path, 3)
    write_transforms(tmp_path / "transforms.json", paths, orbit_c2w(8)[:3], np.tile([[18.0, 18.0, 8, 6]], (3, 1)),
                     (W, H), np.tile([[2.0, 6.0]], (3, 1)))
    scene = load_scene(tmp_path)
    assert scene.annotations is None and scene.classes == []
    (tmp_path / "segmentations").mkdir()
    (tmp_path / "segmentations" / "classes.txt").write_text("red chair\nwall\n")
    scene = load_scene(tmp_path)
    assert scene.classes == ["red chair", "wall"]
    assert scene.annotations.views == [] and scene.annotations.labels.shape == (0, H, W, 2)


def test_errors_name_the_file_and_the_fix(tmp_path):
    paths = make_images(tmp_path, 3)
    c2w = orbit_c2w(3)
    frames = [{"file_path": f"images/{p.name}", "transform_matrix": np.vstack([c2w[i], [0, 0, 0, 1]]).tolist()}
              for i, p in enumerate(paths)]
    target = tmp_path / "transforms.json"
    target.write_text(json.dumps({"frames": frames}))
    with pytest.raises(InputError, match="no focal length"):
        read_transforms(target)
    parallel = [dict(f, transform_matrix=np.vstack([np.eye(3, 4) + np.eye(3, 4, 3) * i, [0, 0, 0, 1]]).tolist())
                for i, f in enumerate(frames)]
    target.write_text(json.dumps({"fl_x": 10.0, "frames": parallel}))
    with pytest.raises(InputError, match="do not converge"):
        load_scene(tmp_path)
    frames[1]["file_path"] = "images/missing.png"
    target.write_text(json.dumps({"fl_x": 10.0, "w": W, "h": H, "near": 1.0, "far": 5.0, "frames": frames}))
    with pytest.raises(InputError, match="does not exist"):
        load_scene(tmp_path)
