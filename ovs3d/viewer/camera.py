"""The browser's camera in ovs3d's camera model and ray space.

viser reports a client camera as ``position`` (the centre, world), ``wxyz`` (the unit quaternion of the
camera-to-world rotation in the OpenCV convention: +x right, +y down, +z forward), ``fov`` (vertical, in
radians) and ``aspect`` (canvas width / height). ovs3d's cameras (``scene/cameras.py``) are OpenGL-style:
the rotation columns are (right, up, back), so

    R_ovs3d = R_viser @ diag(1, -1, -1)       (and back the same way: the matrix is its own inverse),

and a viewer frame of height H has square pixels with fx = fy = (H / 2) / tan(fov / 2), W = round(H aspect),
the principal point at the image centre.

Ray space: the NDC warp (``scene/rayspace.py``) takes its focal and image size from the cameras it is
given, which for the scene's own cameras at any resolution is the same warp (fx / W is kept by
``Cameras.resized``). A browser camera has its own field of view and aspect, so the viewer pins the warp
to the run's training cameras (``PinnedNDC``): world rays from the browser camera, NDC of the training
cameras. NDC only holds rays that look forward (world direction z < 0) from in front of the near plane's
far side; the rest (turned around or behind) are sent past the box and render as background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ovs3d.scene.cameras import Cameras, ndc_rays
from ovs3d.scene.rayspace import NDCSpace, RaySpace

GL_FROM_CV = np.diag([1.0, -1.0, -1.0])
MISS_ORIGIN = (1e3, 1e3, 1e3)
"""Where rays the ray space cannot hold start: far outside every box (they render as background)."""


def quat_to_matrix(wxyz: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> [3, 3] rotation matrix."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """[3, 3] rotation matrix -> unit quaternion (w, x, y, z) with w >= 0 (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], 1e-12))
        q = [0.0, 0.0, 0.0, 0.0]
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.array(q)
    q = q / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


@dataclass(frozen=True)
class ViewCamera:
    """One camera of the viewer: ``c2w`` [3, 4] in ovs3d's convention, vertical field of view ``fov``
    (radians) and ``aspect`` (width / height). Hashable by value (``key``) for frame caches."""

    c2w: np.ndarray = field(compare=False)
    fov: float
    aspect: float

    @property
    def key(self) -> tuple:
        return (tuple(np.round(self.c2w, 6).reshape(-1).tolist()), round(self.fov, 6), round(self.aspect, 4))

    def size(self, height: int) -> tuple[int, int]:
        """(width, height) of a frame ``height`` pixels high (each at least 4)."""
        height = max(int(round(height)), 4)
        return max(int(round(height * self.aspect)), 4), height

    def cameras(self, height: int) -> Cameras:
        """This camera as ovs3d ``Cameras`` (one camera) for a frame ``height`` pixels high."""
        width, height = self.size(height)
        focal = 0.5 * height / math.tan(0.5 * self.fov)
        c2w = torch.tensor(self.c2w, dtype=torch.float32)[None]
        return Cameras(c2w, torch.tensor(focal), torch.tensor(focal), torch.tensor(width / 2), torch.tensor(height / 2),
                       width, height)


def from_viser(wxyz, position, fov: float, aspect: float) -> ViewCamera:
    """The ``ViewCamera`` of a viser client camera (OpenCV quaternion, centre, vertical fov, aspect)."""
    rot = quat_to_matrix(np.asarray(wxyz)) @ GL_FROM_CV
    return ViewCamera(np.concatenate([rot, np.asarray(position, dtype=np.float64).reshape(3, 1)], axis=1),
                      float(fov), float(aspect))


def to_viser(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(wxyz, position) of an ovs3d camera-to-world [3, 4] for viser (frustums, client cameras)."""
    c2w = np.asarray(c2w, dtype=np.float64)
    return matrix_to_quat(c2w[:, :3] @ GL_FROM_CV), c2w[:, 3].copy()


def dataset_view(cameras: Cameras, index: int) -> ViewCamera:
    """The ``ViewCamera`` of a scene camera (its vertical fov and aspect)."""
    fy = float(cameras.fy[index])
    fov = 2.0 * math.atan(0.5 * cameras.height / fy)
    return ViewCamera(cameras.c2w[index].double().cpu().numpy(), fov, cameras.width / cameras.height)


def look_target(view: ViewCamera, distance: float) -> np.ndarray:
    """The point ``distance`` in front of the camera (the orbit centre given to the browser)."""
    return view.c2w[:, 3] - distance * view.c2w[:, 2]


@dataclass(frozen=True)
class PinnedNDC(NDCSpace):
    """The NDC space of a run, pinned to its training cameras' focal and image size (``focal``, ``width``,
    ``height``), for cameras with any field of view. Rays it cannot hold miss the box."""

    focal: float = 1.0
    width: int = 1
    height: int = 1

    def rays(self, cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        origins, dirs = cameras.rays(view, u, v)
        ok = dirs[:, 2] < -1e-6
        o, d = ndc_rays(origins, torch.where(ok[:, None], dirs, torch.tensor([0.0, 0.0, -1.0]).to(dirs)),
                        self.focal, self.width, self.height)
        ok = ok & torch.isfinite(o).all(-1) & torch.isfinite(d).all(-1)
        miss_o = torch.tensor(MISS_ORIGIN, dtype=o.dtype, device=o.device).expand_as(o)
        miss_d = torch.tensor((0.0, 0.0, 1.0), dtype=d.dtype, device=d.device).expand_as(d)
        return torch.where(ok[:, None], o, miss_o), torch.where(ok[:, None], d, miss_d)


def viewer_space(space: RaySpace, train_cameras: Cameras) -> RaySpace:
    """The ray space to render browser cameras in: NDC pinned to the training cameras, others as they are."""
    if isinstance(space, NDCSpace):
        return PinnedNDC(box=space.box, focal=float(train_cameras.fx[0]), width=train_cameras.width,
                         height=train_cameras.height)
    return space


def strip_camera(cameras: Cameras, row0: int, row1: int) -> Cameras:
    """Rows [row0, row1) of a one-camera frame as a camera of their own (the principal point moves up)."""
    return Cameras(cameras.c2w, cameras.fx, cameras.fy, cameras.cx, cameras.cy - row0, cameras.width, row1 - row0)
