"""The synthetic scene: its ground truth agrees with its geometry, it loads like a real scene, it is
deterministic."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
import torch

from ovs3d.scene.cameras import Cameras
from ovs3d.scene.load import load_scene
from ovs3d.scene.synthetic import make_synthetic_scene, pixel_rays, read_depth, read_scene_json

PROMPTS = ["red ball", "blue box", "yellow cone", "green cylinder", "purple box", "brown wooden floor",
           "grey stone wall"]


def surface_residual(prim: dict, p: np.ndarray) -> np.ndarray:
    """Zero exactly on the primitive's surface, [R]: an implicit form written independently of the tracer
    (for convex solids: the largest of the face constraints, which is 0 on the boundary)."""
    shape = prim["shape"]
    if shape == "plane":
        return (p - np.asarray(prim["point"])) @ np.asarray(prim["normal"])
    if shape == "sphere":
        return np.linalg.norm(p - np.asarray(prim["center"]), axis=1) - prim["radius"]
    if shape == "box":
        c, s = np.cos(prim["yaw"]), np.sin(prim["yaw"])
        world_from_local = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        local = (p - np.asarray(prim["center"])) @ world_from_local
        return (np.abs(local) - np.asarray(prim["half_size"])).max(axis=1)
    rel = p - np.asarray(prim["base"])
    radial = np.hypot(rel[:, 0], rel[:, 2])
    h, r = prim["height"], prim["radius"]
    if shape == "cylinder":
        return np.maximum.reduce([radial - r, -rel[:, 1], rel[:, 1] - h])
    if shape == "cone":
        return np.maximum.reduce([radial - r * (h - rel[:, 1]) / h, -rel[:, 1]])
    raise AssertionError(shape)


def test_loads_like_a_real_scene(synthetic_scene):
    scene = load_scene(synthetic_scene)
    assert scene.kind == "forward"
    assert scene.images.shape == (16, 72, 96, 3) and scene.images.dtype == np.float32
    assert (scene.width, scene.height) == (96, 72)
    assert scene.classes == PROMPTS
    assert scene.annotations.views == [0, 5, 10, 15]
    assert scene.annotations.labels.shape == (4, 72, 96, 7)
    # The masks partition every annotated image, and every class is clearly visible in every annotated view.
    assert np.all(scene.annotations.labels.sum(-1) == 1)
    assert scene.annotations.labels.sum((1, 2)).min() >= 50  # pixels of the least visible class (96x72)
    assert scene.bounds.min() == pytest.approx(1 / 0.75, rel=1e-6)
    # Objects between ~2 and ~8 units from the cameras (world units, before the loader's scaling).
    raw = np.load(synthetic_scene / "poses_bounds.npy")[:, 15:]
    assert 1.5 < raw[:, 0].min() and raw[:, 1].max() < 12.0


def test_pixel_rays_match_cameras(synthetic_scene):
    meta = read_scene_json(synthetic_scene)
    c2w = np.asarray(meta["cameras_c2w"])
    cams = Cameras.from_focal(torch.tensor(c2w), meta["focal"], 96, 72)
    o, d = cams.image_rays(3)
    o2, d2 = pixel_rays(c2w[3], meta["focal"], 96, 72)
    np.testing.assert_allclose(o.reshape(-1, 3).numpy(), o2, atol=1e-12)
    # (Cameras.from_focal stores the focal length as float32 first, hence the tolerance)
    np.testing.assert_allclose(d.reshape(-1, 3).numpy(), d2, rtol=1e-6, atol=1e-7)


def test_mask_pixels_hit_their_objects(synthetic_scene):
    """The point at the exact depth along each mask pixel's centre ray lies on that class's primitive."""
    meta = read_scene_json(synthetic_scene)
    prims = {p["prompt"]: p for p in meta["primitives"]}
    c2w = torch.tensor(meta["cameras_c2w"])
    cams = Cameras.from_focal(c2w, meta["focal"], 96, 72)
    depth = read_depth(synthetic_scene, scene_units=False)
    scene = load_scene(synthetic_scene)
    for v, view in enumerate(scene.annotations.views):
        o, d = (x.reshape(-1, 3).numpy() for x in cams.image_rays(view))
        points = o + depth[view].reshape(-1, 1).astype(np.float64) * d
        labels = scene.annotations.labels[v].reshape(-1, len(scene.classes))
        for c, name in enumerate(scene.classes):
            on = labels[:, c] == 1
            residual = np.abs(surface_residual(prims[name], points[on]))
            assert residual.max() < 2e-3, (view, name, residual.max())
            # and the point is not on any other object's surface (objects do not touch each other)
            for other, prim in prims.items():
                if other != name and "plane" not in (prim["shape"], prims[name]["shape"]):
                    assert np.abs(surface_residual(prim, points[on])).min() > 1e-3, (view, name, other)


def test_depth_reprojection_keeps_labels(synthetic_scene):
    """Lift view 0's pixels with the exact depth, project them into view 15 with the LOADED (recentred,
    rescaled) cameras; where the point is visible in both views the class labels agree."""
    scene = load_scene(synthetic_scene)
    depth = read_depth(synthetic_scene)  # in the loaded scene's units
    labels = scene.annotations.labels.argmax(-1)
    a, b = 0, 3  # annotated slots: views 0 and 15 (opposite corners of the camera grid)
    va, vb = scene.annotations.views[a], scene.annotations.views[b]
    cams = scene.cameras
    o, d = (x.reshape(-1, 3).double().numpy() for x in cams.image_rays(va))
    points = o + depth[va].reshape(-1, 1) * d
    rot = cams.c2w[vb, :, :3].double().numpy()
    local = (points - cams.c2w[vb, :, 3].double().numpy()) @ rot
    z = -local[:, 2]
    u = cams.cx[vb].item() + cams.fx[vb].item() * local[:, 0] / z
    v = cams.cy[vb].item() - cams.fy[vb].item() * local[:, 1] / z
    inside = (u >= 0) & (u < scene.width) & (v >= 0) & (v < scene.height) & (z > 0)
    i, j = np.floor(u[inside]).astype(int), np.floor(v[inside]).astype(int)
    visible = np.abs(depth[vb][j, i] - z[inside]) < 0.01 * z[inside]
    assert visible.sum() > 0.6 * scene.width * scene.height
    agree = labels[a].reshape(-1)[inside][visible] == labels[b][j, i][visible]
    assert agree.mean() > 0.98, agree.mean()


def test_same_seed_same_files_other_seed_other_scene(tmp_path):
    kwargs = dict(n_views=3, width=24, height=18, supersample=1)
    first = make_synthetic_scene(tmp_path / "a", seed=5, **kwargs)
    second = make_synthetic_scene(tmp_path / "b", seed=5, **kwargs)
    third = make_synthetic_scene(tmp_path / "c", seed=6, **kwargs)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 1 + 3 + 3 + 1 + 3 * 7 + 1  # poses, images, depth, classes, masks, scene.json
    _, mismatch, errors = filecmp.cmpfiles(first, second, [str(f) for f in files], shallow=False)
    assert mismatch == [] and errors == []
    objects = [json.loads((root / "scene.json").read_text())["primitives"][:5] for root in (first, third)]
    assert objects[0] != objects[1]


def test_overwrite_replaces_the_folder(tmp_path):
    out = make_synthetic_scene(tmp_path / "s", n_views=2, width=16, height=16, supersample=1)
    (out / "stale.txt").write_text("old")
    make_synthetic_scene(out, n_views=3, width=16, height=16, supersample=1, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert len(list((out / "images").iterdir())) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["s"]  # no temporary folder left behind
