"""Camera paths for videos: the LLFF spiral (method spec section 2.7) for forward-facing captures, an orbit
for 360-degree ones (``video_path`` picks by the scene type)."""

from __future__ import annotations

import numpy as np
import torch

from typing import Literal

from ovs3d.scene.cameras import Cameras
from ovs3d.scene.normalize import average_pose


def look_at(center: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """[3, 4] camera-to-world (right, up, back, centre) for a camera at ``center`` looking at ``target``."""
    back = center - target
    back = back / np.linalg.norm(back)
    right = np.cross(up, back)
    right = right / np.linalg.norm(right)
    true_up = np.cross(back, right)
    return np.stack([right, true_up, back, center], axis=1)


def spiral_path(cameras: Cameras, bounds: np.ndarray, n_frames: int = 120, rotations: float = 2.0,
                z_rate: float = 0.5) -> Cameras:
    """The NeRF/TensoRF spiral around the average pose.

    radii r = 90th percentile of |camera centre| per axis; focus depth = 1 / (0.25 / (0.9 min near) +
    0.75 / (5 max far)); frame k at angle theta = 4 pi k / n (2 rotations) has centre
    base @ (r_x cos theta, -r_y sin theta, -r_z sin(z_rate theta)) and looks at base @ (0, 0, -focus).
    """
    c2w = cameras.c2w.double().cpu().numpy()
    base = average_pose(c2w)
    up = c2w[:, :, 1].sum(0)
    up = up / np.linalg.norm(up)
    radii = np.percentile(np.abs(c2w[:, :, 3]), 90, axis=0)
    focus = 1.0 / (0.25 / (0.9 * bounds.min()) + 0.75 / (5.0 * bounds.max()))
    poses = []
    for theta in np.linspace(0.0, 2 * np.pi * rotations, n_frames + 1)[:-1]:
        local = np.array([radii[0] * np.cos(theta), -radii[1] * np.sin(theta), -radii[2] * np.sin(theta * z_rate), 1.0])
        center = base @ local
        target = base @ np.array([0, 0, -focus, 1.0])
        poses.append(look_at(center, target, up))
    c2w_path = torch.tensor(np.stack(poses), dtype=torch.float32)
    first = cameras[0]
    return Cameras(c2w_path, first.fx[0], first.fy[0], first.cx[0], first.cy[0], cameras.width, cameras.height)


def orbit_path(cameras: Cameras, n_frames: int = 120) -> Cameras:
    """An orbit for 360-degree captures (poses in the 360 normalisation: look-at centre at the origin, +y up).

    The ellipse through the camera centres: in the horizontal plane (x, z), centre m = mean of the centres,
    axes e_1, e_2 and semi-axes a_k = sqrt(2 lambda_k) from the eigen-decomposition of their covariance
    (points spread evenly on an ellipse have variance a^2 / 2 along each axis); height = mean y. Frame k at
    theta = 2 pi k / n sits at m + a_1 cos(theta) e_1 + a_2 sin(theta) e_2 and looks at the origin, +y up.
    """
    centers = cameras.c2w[:, :, 3].double().cpu().numpy()
    flat = centers[:, [0, 2]]
    mean = flat.mean(0)
    eigvals, eigvecs = np.linalg.eigh(np.cov((flat - mean).T, bias=True) if len(flat) > 1 else np.eye(2))
    semi = np.sqrt(2 * np.clip(eigvals, 1e-12, None))
    height = centers[:, 1].mean()
    poses = []
    for theta in np.linspace(0.0, 2 * np.pi, n_frames + 1)[:-1]:
        x, z = mean + semi[0] * np.cos(theta) * eigvecs[:, 0] + semi[1] * np.sin(theta) * eigvecs[:, 1]
        poses.append(look_at(np.array([x, height, z]), np.zeros(3), np.array([0.0, 1.0, 0.0])))
    first = cameras[0]
    return Cameras(torch.tensor(np.stack(poses), dtype=torch.float32), first.fx[0], first.fy[0], first.cx[0],
                   first.cy[0], cameras.width, cameras.height)


PathName = Literal["video", "spiral", "orbit"]


def video_path(cameras: Cameras, bounds: np.ndarray, kind: str, n_frames: int = 120, name: PathName = "video"
               ) -> Cameras:
    """The camera path ``name``; ``video`` = the scene's own: the spiral for ``kind`` forward, else the orbit."""
    if name == "video":
        name = "spiral" if kind == "forward" else "orbit"
    return spiral_path(cameras, bounds, n_frames) if name == "spiral" else orbit_path(cameras, n_frames)
