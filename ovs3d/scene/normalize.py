"""Pose normalisation: the one similarity transform every loader applies, chosen by the scene type.

All loaders (LLFF ``poses_bounds.npy``, nerfstudio ``transforms.json``, COLMAP ``sparse/0``) first convert
their poses to ovs3d's axes (right, up, back; see ``scene/cameras.py``) in the file's own world frame,
with near/far depth bounds per camera, then call ``normalize_poses``. The same capture therefore gives
the same cameras whatever file it was read from. Both normalisations are idempotent (normalising
normalised poses changes nothing), so writing normalised cameras and reading them back is exact.

- ``forward`` (LLFF's, for NDC): express the poses in the frame of their average pose, then divide
  translations and bounds by s = 0.75 * min(near), so the nearest bound becomes 1 / 0.75.
- ``360`` (object-centric): the origin moves to the look-at centre (the point closest, in least
  squares, to every camera's optical axis); +y becomes the capture's up (the normal of the plane best
  fitting the camera centres, signed to agree with the cameras' mean up axis); +z points from the centre
  towards camera 0, horizontally; translations and bounds are divided by the largest camera distance
  to the centre, so every camera lies on or inside the unit sphere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

BOUNDS_SCALE = 0.75


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def average_pose(c2w: np.ndarray) -> np.ndarray:
    """Proper-rotation average of [N, 3, 4] poses, as [3, 4]: centre = mean centre, z = mean z axis,
    x = normalize(mean y cross z), y = z cross x."""
    center = c2w[:, :, 3].mean(0)
    z = normalize(c2w[:, :, 2].mean(0))
    y_mean = c2w[:, :, 1].mean(0)
    x = normalize(np.cross(y_mean, z))
    y = np.cross(z, x)
    return np.stack([x, y, z, center], axis=1)


def apply_frame(c2w: np.ndarray, frame: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Express [N, 3, 4] poses in the frame ``frame`` ([3, 4]: axes as columns, then origin), with
    translations divided by ``scale``: R' = F^T R, t' = F^T (t - o) / scale."""
    rot_t = frame[:, :3].T
    out = np.empty_like(c2w)
    out[:, :, :3] = rot_t @ c2w[:, :, :3]
    out[:, :, 3] = (c2w[:, :, 3] - frame[:, 3]) @ rot_t.T / scale
    return out


def recenter(c2w: np.ndarray) -> np.ndarray:
    """Express [N, 3, 4] poses in the frame of their average pose."""
    return apply_frame(c2w, average_pose(c2w))


def look_at_center(c2w: np.ndarray) -> np.ndarray:
    """[3] point minimising the summed squared distance to the cameras' optical axes:
    solve sum_i (I - d_i d_i^T) p = sum_i (I - d_i d_i^T) o_i, d_i the unit viewing direction."""
    dirs = normalize(-c2w[:, :, 2])
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]
    lhs = proj.sum(0)
    rhs = np.einsum("nij,nj->i", proj, c2w[:, :, 3])
    return np.linalg.lstsq(lhs, rhs, rcond=None)[0]


def orbit_frame(c2w: np.ndarray) -> np.ndarray:
    """[3, 4] frame of an object-centric capture: origin at the look-at centre, y = up, z towards camera 0."""
    center = look_at_center(c2w)
    mean_up = c2w[:, :, 1].mean(0)
    offsets = c2w[:, :, 3] - c2w[:, :, 3].mean(0)
    eigvals, eigvecs = np.linalg.eigh(offsets.T @ offsets)
    if len(c2w) >= 3 and eigvals[1] > 1e-6 * max(eigvals[2], 1e-12):
        up = eigvecs[:, 0] * (1.0 if eigvecs[:, 0] @ mean_up >= 0 else -1.0)
    else:
        up = normalize(mean_up)
    toward = c2w[0, :, 3] - center
    toward = toward - (toward @ up) * up
    if np.linalg.norm(toward) < 1e-9:
        toward = c2w[0, :, 2] - (c2w[0, :, 2] @ up) * up
    z = normalize(toward)
    x = np.cross(up, z)
    return np.stack([x, up, z, center], axis=1)


def normalizing_frame(c2w: np.ndarray, bounds: np.ndarray, kind: Literal["forward", "360"]) -> tuple[np.ndarray, float]:
    """(frame [3, 4], scale s) of the normalisation of [N, 3, 4] poses with [N, 2] bounds (module docstring):
    the normalised pose of c2w is ``apply_frame(c2w, frame, s)``."""
    if kind == "forward":
        return average_pose(c2w), BOUNDS_SCALE * float(bounds.min())
    frame = orbit_frame(c2w)
    radius = float(np.linalg.norm(c2w[:, :, 3] - frame[:, 3], axis=-1).max())
    return frame, radius if radius > 0 else 1.0


def input_from_normalized(frame: np.ndarray, scale: float) -> np.ndarray:
    """[4, 4] similarity taking normalised points back to the pose file's frame: x = F (s x') + o, the
    inverse of ``apply_frame``'s point map (F the frame's axes, o its origin)."""
    out = np.eye(4)
    out[:3, :3] = frame[:, :3] * scale
    out[:3, 3] = frame[:, 3]
    return out


def normalize_poses(c2w: np.ndarray, bounds: np.ndarray,
                    kind: Literal["forward", "360"]) -> tuple[np.ndarray, np.ndarray]:
    """Normalise [N, 3, 4] ovs3d-axes poses and their [N, 2] near/far bounds (see the module docstring).

    Returns (c2w [N, 3, 4], bounds [N, 2]) in the normalised frame, float64.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    bounds = np.asarray(bounds, dtype=np.float64)
    frame, scale = normalizing_frame(c2w, bounds, kind)
    return apply_frame(c2w, frame, scale), bounds / scale
