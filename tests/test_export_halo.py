"""Occlusion halos (``ovs3d/export/halo.py``): the background band that carries a foreground label is
dropped, surfaces, tilted planes and separate objects are kept."""

from __future__ import annotations

import numpy as np

from ovs3d.export.halo import halo_pixels, max_step
from ovs3d.export.points import drop_halos

FOCAL = 100.0
STEP = max_step(FOCAL, 5.0)


def scene_image(ring: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 40x40 view: a floor (label 1) whose depth grows 1 % per row from 8, a square object (label 0,
    depth 5, rows/cols 15-24) and a ``ring``-pixel band of floor around it labelled 0.
    Returns (depth, label, object mask, ring mask)."""
    rows = np.arange(40, dtype=np.float64)[:, None]
    depth = np.repeat(8.0 * 1.01 ** rows, 40, axis=1)
    label = np.ones((40, 40), dtype=np.int64)
    obj = np.zeros((40, 40), bool)
    obj[15:25, 15:25] = True
    band = np.zeros((40, 40), bool)
    band[15 - ring:25 + ring, 15 - ring:25 + ring] = True
    band &= ~obj
    depth[obj] = 5.0
    label[obj | band] = 0
    return depth, label, obj, band


def test_max_step_is_the_depth_step_of_a_plane_seen_at_the_angle() -> None:
    # a plane at angle a to the ray: r(delta) ~ r (1 + delta / tan a) for a ray turned by delta = 1 / f
    assert np.isclose(max_step(100.0, 45.0), 0.01)
    assert max_step(100.0, 5.0) > max_step(100.0, 20.0) > max_step(200.0, 20.0)


def test_the_band_behind_an_occluder_with_its_label_is_a_halo() -> None:
    depth, label, obj, band = scene_image()
    halo = halo_pixels(depth, label, STEP)
    assert halo[band].all()
    assert not halo[obj].any() and not halo[label == 1].any()


def test_tilted_planes_missing_pixels_and_separate_objects_are_kept() -> None:
    depth, label, obj, band = scene_image()
    label[band] = 1                                     # no halo: the object and the floor only
    assert not halo_pixels(depth, label, STEP).any()
    steep = np.repeat(5.0 * (1 + 0.5 * STEP) ** np.arange(40.0)[:, None], 40, axis=1)
    assert not halo_pixels(steep, np.zeros((40, 40), np.int64), STEP).any()      # one surface, just under the step
    far = label.copy()
    far[2:6, 2:6] = 0                                   # a second object of class 0, not touching the first
    assert not halo_pixels(depth, far, STEP)[2:6, 2:6].any()
    holes = depth.copy()
    holes[:, 30:] = np.nan                              # rays without a point never join or split anything
    label[:, 30:] = -1
    assert not halo_pixels(holes, label, STEP).any()


def test_a_piece_in_front_of_any_jump_is_kept_and_only_the_far_side_goes() -> None:
    """A piece that is the near side of one jump is not a halo even where it is the far side of another: the
    band is kept when a farther piece of its label (a wall patch at depth 20) touches it, and that goes."""
    depth, label, obj, band = scene_image()
    wall = np.zeros((40, 40), bool)
    wall[10:13, 12:28] = True                          # touches the band's top rows (13-14) from above
    depth[wall] = 20.0
    label[wall] = 0
    halo = halo_pixels(depth, label, STEP)
    assert halo[wall].all() and not halo[band].any() and not halo[obj].any()


def test_drop_halos_removes_the_band_rays_and_angle_zero_keeps_them() -> None:
    depth, label, obj, band = scene_image()
    pixel = np.arange(40 * 40)
    cosines = np.stack([label.reshape(-1) == 0, label.reshape(-1) == 1], 1).astype(np.float32)

    class Cams:
        width = height = 40
        fx = [FOCAL]

    def parts() -> list[dict]:
        return [{"pixel": pixel.copy(), "depth": depth.reshape(-1).copy(), "cosines": cosines.copy(),
                 "xyz": np.zeros((pixel.size, 3))}]

    kept = parts()
    assert drop_halos(kept, Cams(), [0], 2, "cosine", 5.0) == band.sum()
    assert set(kept[0]["pixel"]) == set(pixel[~band.reshape(-1)]) and len(kept[0]["xyz"]) == len(kept[0]["pixel"])
    same = parts()
    assert drop_halos(same, Cams(), [0], 2, "cosine", 0.0) == 0 and len(same[0]["pixel"]) == pixel.size
