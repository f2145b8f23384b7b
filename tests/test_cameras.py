"""Cameras, pixel rays and the NDC warp: known analytic answers and round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovs3d.scene.cameras import Cameras, ndc_rays
from ovs3d.scene.llff import llff_to_ovs3d
from ovs3d.scene.normalize import average_pose, recenter

W, H, F = 64, 48, 50.0


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def random_cameras(n: int, seed: int = 0) -> Cameras:
    rng = np.random.default_rng(seed)
    c2w = np.stack([np.concatenate([random_rotation(rng), rng.normal(size=(3, 1))], axis=1) for _ in range(n)])
    return Cameras(torch.tensor(c2w), torch.tensor(rng.uniform(40, 60, n)), torch.tensor(rng.uniform(40, 60, n)),
                   torch.tensor(rng.uniform(28, 36, n)), torch.tensor(rng.uniform(20, 28, n)), W, H)


def project(cams: Cameras, view: int, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World points [B, 3] -> (u, v, depth along -z), the pinhole model written out independently."""
    rot, centre = cams.c2w[view, :, :3], cams.c2w[view, :, 3]
    local = (points - centre) @ rot  # R^T (p - c)
    depth = -local[:, 2]
    u = cams.cx[view] + cams.fx[view] * local[:, 0] / depth
    v = cams.cy[view] - cams.fy[view] * local[:, 1] / depth
    return u, v, depth


def test_ndc_of_the_principal_ray():
    """Camera at the origin looking down -z: the ray through the principal point maps to o' = (0, 0, -1),
    d' = (0, 0, 2) (section 2.4: every NDC ray starts at z = -1 and has direction z = +2)."""
    cams = Cameras.from_focal(torch.eye(4, dtype=torch.float64)[None, :3], F, W, H)
    o, d = cams.rays(torch.tensor([0]), torch.tensor([W / 2.0], dtype=torch.float64),
                     torch.tensor([H / 2.0], dtype=torch.float64))
    np.testing.assert_allclose(d.numpy(), [[0, 0, -1]])
    o_ndc, d_ndc = ndc_rays(o, d, F, W, H)
    np.testing.assert_allclose(o_ndc.numpy(), [[0, 0, -1]], atol=1e-12)
    np.testing.assert_allclose(d_ndc.numpy(), [[0, 0, 2]], atol=1e-12)


def test_ndc_known_values_off_axis():
    """A ray parallel to -z from (0.3, -0.2, 0): o' = (2f/W * 0.3, 2f/H * -0.2, -1) and d' = (-o'x, -o'y, 2),
    so at t = 1 (depth infinity) it reaches the vanishing point (0, 0, 1); an
    oblique ray's point at depth 4 lands at NDC z = 1 - 2/4 = 0.5 at t = 0.75 with the projected x, y."""
    o = torch.tensor([[0.3, -0.2, 0.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, -1.0]], dtype=torch.float64)
    o_ndc, d_ndc = ndc_rays(o, d, F, W, H)
    np.testing.assert_allclose(o_ndc.numpy(), [[2 * F / W * 0.3, 2 * F / H * -0.2, -1.0]], atol=1e-12)
    np.testing.assert_allclose(d_ndc.numpy(), [[-2 * F / W * 0.3, 2 * F / H * 0.2, 2.0]], atol=1e-12)
    np.testing.assert_allclose((o_ndc + d_ndc).numpy(), [[0, 0, 1]], atol=1e-12)

    o = torch.tensor([[0.1, 0.2, -0.5]], dtype=torch.float64)
    d = torch.tensor([[0.05, -0.1, -1.0]], dtype=torch.float64)
    p = o + 3.5 * d  # z = -4
    o_ndc, d_ndc = ndc_rays(o, d, F, W, H)
    q = o_ndc + 0.75 * d_ndc
    expected = [-F / (W / 2) * p[0, 0] / p[0, 2], -F / (H / 2) * p[0, 1] / p[0, 2], 0.5]
    np.testing.assert_allclose(q.numpy(), [expected], atol=1e-12)
    assert o_ndc[0, 2].item() == pytest.approx(-1.0) and d_ndc[0, 2].item() == pytest.approx(2.0)


def test_world_to_pixel_to_ray_round_trip():
    cams = random_cameras(5)
    rng = np.random.default_rng(1)
    for view in range(len(cams)):
        # points in front of the camera: camera frame (x, y, -depth) -> world
        local = torch.tensor(np.stack([rng.uniform(-1, 1, 20), rng.uniform(-1, 1, 20), -rng.uniform(1, 5, 20)], 1))
        points = local @ cams.c2w[view, :, :3].T + cams.c2w[view, :, 3]
        u, v, depth = project(cams, view, points)
        np.testing.assert_allclose(depth.numpy(), -local[:, 2].numpy())
        o, d = cams.rays(torch.full((20,), view), u, v)
        np.testing.assert_allclose((o + depth[:, None] * d).numpy(), points.numpy(), atol=1e-10)


def test_pixel_centres_and_image_rays():
    cams = random_cameras(2)
    u, v = cams.pixel_grid()
    assert u.shape == (H, W) and u[0, 0].item() == 0.5 and v[-1, 0].item() == H - 0.5
    o, d = cams.image_rays(1)
    o2, d2 = cams.rays(torch.ones(H * W, dtype=torch.long), u.reshape(-1), v.reshape(-1))
    np.testing.assert_allclose(d.reshape(-1, 3).numpy(), d2.numpy())
    np.testing.assert_allclose(o.reshape(-1, 3).numpy(), o2.numpy())


def test_resized_intrinsics_keep_rays():
    """Halving the image: the point (u/2, v/2) of the small image has the same ray as (u, v)."""
    cams = random_cameras(3)
    small = cams.resized(W // 2, H // 2)
    assert (small.width, small.height) == (W // 2, H // 2)
    np.testing.assert_allclose(small.fx.numpy(), cams.fx.numpy() / 2)
    np.testing.assert_allclose(small.cy.numpy(), cams.cy.numpy() / 2)
    u = torch.tensor([3.0, 17.5, 60.0], dtype=torch.float64)
    v = torch.tensor([1.0, 24.0, 47.5], dtype=torch.float64)
    view = torch.tensor([0, 1, 2])
    np.testing.assert_allclose(small.rays(view, u / 2, v / 2)[1].numpy(), cams.rays(view, u, v)[1].numpy())


def test_llff_column_reorder():
    """(down, right, back) -> (right, up, back) is [c1, -c0, c2]; applied four times it is the identity."""
    rng = np.random.default_rng(2)
    rot, centre = random_rotation(rng), rng.normal(size=3)
    right, up, back = rot.T
    llff = np.stack([-up, right, back, centre], axis=1)[None]
    ours = llff_to_ovs3d(llff)
    np.testing.assert_allclose(ours[0], np.stack([right, up, back, centre], axis=1))
    np.testing.assert_allclose(llff_to_ovs3d(llff_to_ovs3d(llff_to_ovs3d(ours))), llff)


def test_recentre_gives_proper_rotation_and_identity_average():
    rng = np.random.default_rng(3)
    base = random_rotation(rng)
    # forward-facing rig: small rotations around a common base orientation
    poses = []
    for _ in range(10):
        angle = rng.uniform(-0.2, 0.2)
        jitter = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
        poses.append(np.concatenate([base @ jitter, rng.normal(size=(3, 1)) + 5.0], axis=1))
    poses = np.stack(poses)
    avg = average_pose(poses)
    assert np.linalg.det(avg[:, :3]) == pytest.approx(1.0)
    centred = recenter(poses)
    np.testing.assert_allclose(average_pose(centred), np.eye(3, 4), atol=1e-12)
    assert np.allclose(np.linalg.det(centred[:, :, :3]), 1.0)
    # recentring is rigid: distances between camera centres are kept
    np.testing.assert_allclose(np.linalg.norm(centred[0, :, 3] - centred[1, :, 3]),
                               np.linalg.norm(poses[0, :, 3] - poses[1, :, 3]))


def test_camera_indexing_and_device():
    cams = random_cameras(4)
    sub = cams[[1, 3]]
    assert len(sub) == 2
    np.testing.assert_allclose(sub.c2w.numpy(), cams.c2w[[1, 3]].numpy())
    np.testing.assert_allclose(sub.fx.numpy(), cams.fx[[1, 3]].numpy())
    np.testing.assert_allclose(cams.centers.numpy(), cams.c2w[:, :, 3].numpy())
    assert cams.to("cpu").c2w.device.type == "cpu"
