"""Camera paths for videos: the LLFF spiral (method spec section 2.7)."""

from __future__ import annotations

import numpy as np
import torch

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
