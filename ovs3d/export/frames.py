"""World coordinates of exports: from the field's grid coordinates back to the frame of the input poses.

A point x_g of the field's grid (``scene/rayspace.py``: NDC for forward-facing scenes, world for box
scenes) goes through two inverses:

    x_s = space.to_scene(x_g, cameras)         undo the ray-space warp (inverse NDC) -> normalised scene frame
    x   = A [x_s, 1]                            undo the normalisation (``Scene.input_from_scene``, a similarity
                                                A = [s F | o]: recentring frame F, origin o, scale s)

so exports overlay on the COLMAP / LLFF point cloud and on the input cameras. ``cameras.json`` holds the
input cameras in the same frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ovs3d.io.images import image_size
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.rayspace import RaySpace
from ovs3d.scene.scene import Scene

FAR_MARGIN = 1.25
"""Points farther than this times the farthest depth bound (NDC only) are the unbounded background: dropped."""


@dataclass
class WorldFrame:
    """The map from a run's grid coordinates to the input poses' frame.

    Attributes:
        space: the run's ray space; cameras: the cameras whose rays were warped into it (NDC: camera 0's focal).
        input_from_scene: [4, 4] similarity of the scene's normalisation; far: the farthest depth bound
            of the normalised scene (NDC points beyond ``FAR_MARGIN * far`` are dropped).
    """

    space: RaySpace
    cameras: Cameras
    input_from_scene: np.ndarray
    far: float

    @classmethod
    def of(cls, space: RaySpace, scene: Scene) -> "WorldFrame":
        return cls(space, scene.cameras.to("cpu"), np.asarray(scene.input_from_scene, np.float64),
                   float(np.max(scene.bounds)))

    @property
    def scale(self) -> float:
        """Input units per normalised scene unit (the similarity's scale s)."""
        return float(np.cbrt(abs(np.linalg.det(self.input_from_scene[:3, :3]))))

    def scene_points(self, grid: torch.Tensor) -> torch.Tensor:
        """Grid coordinates [M, 3] -> normalised scene coordinates [M, 3] (float64)."""
        return self.space.to_scene(grid.double().cpu(), self.cameras)

    def kept(self, scene_xyz: torch.Tensor) -> torch.Tensor:
        """[M] bool: finite points, and in NDC not beyond ``FAR_MARGIN`` times the farthest depth bound."""
        keep = torch.isfinite(scene_xyz).all(-1)
        if self.space.name == "ndc":
            keep &= -scene_xyz[:, 2] <= FAR_MARGIN * self.far
        return keep

    def to_input(self, scene_xyz: torch.Tensor | np.ndarray) -> np.ndarray:
        """Normalised scene coordinates [M, 3] -> input-pose coordinates [M, 3] float64."""
        xyz = np.asarray(scene_xyz, dtype=np.float64)
        return xyz @ self.input_from_scene[:3, :3].T + self.input_from_scene[:3, 3]

    def grid_to_input(self, grid: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(input-pose coordinates [K, 3] of the kept points, kept [M] bool) of grid points [M, 3]."""
        scene_xyz = self.scene_points(grid)
        keep = self.kept(scene_xyz)
        return self.to_input(scene_xyz[keep].numpy()), keep

    def view_dirs(self, grid: torch.Tensor) -> torch.Tensor:
        """[M, 3] unit view directions in the ray space for shading grid points (a mesh's vertex colours):
        NDC rays from the recentred (average) camera all run along +z; in a box space, the direction
        from the mean camera centre to the point."""
        if self.space.name == "ndc":
            return grid.new_tensor([0.0, 0.0, 1.0]).expand(grid.shape[0], 3)
        d = grid - self.cameras.centers.mean(0).to(grid)
        return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def cameras_json(scene: Scene) -> dict:
    """The scene's cameras in the input poses' frame: per image its file, camera-to-world 4x4 (columns
    right, up, back, centre: OpenGL / nerfstudio axes; the camera looks along -z) and pinhole intrinsics
    at the stored image size."""
    back = np.asarray(scene.input_from_scene, np.float64)
    scale = float(np.cbrt(abs(np.linalg.det(back[:3, :3]))))
    rot = back[:3, :3] / scale
    width, height = image_size(scene.image_paths[0])
    sx, sy = width / scene.width, height / scene.height
    cams = scene.cameras
    frames = []
    for i, path in enumerate(scene.image_paths):
        c2w = cams.c2w[i].double().numpy()
        matrix = np.eye(4)
        matrix[:3, :3] = rot @ c2w[:, :3]
        matrix[:3, 3] = back[:3, :3] @ c2w[:, 3] + back[:3, 3]
        frames.append({"index": i, "file": path.name, "c2w": matrix.tolist(), "fx": float(cams.fx[i]) * sx,
                       "fy": float(cams.fy[i]) * sy, "cx": float(cams.cx[i]) * sx, "cy": float(cams.cy[i]) * sy})
    return {"convention": "c2w columns (right, up, back, centre) in the input poses' frame; the camera looks "
                          "along -z (OpenGL / nerfstudio); intrinsics in pixels of the stored images",
            "width": width, "height": height, "scene_scale": scale, "frames": frames}
