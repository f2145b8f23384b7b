"""Ray spaces: how the rays of a scene's cameras are parametrised before the field sees them.

A ray space is chosen once per scene (``choose_space``), stored in every checkpoint, and owns

* the ray warp ``rays(cameras, view, u, v) -> (origins, dirs)`` from pixels to rays in the space's
  coordinates;
* the point warp ``warp(x)`` from points on those rays to grid coordinates (the identity except in the
  contracted space), in which the field's box, its occupancy grid and its VM planes live;
* ``box`` [2, 3]: the bounds of the grid coordinates, the one definition of the scene box (the field
  starts on it and may later shrink inside it).

Kinds:

``ndc`` (forward-facing captures, the method's): NeRF's normalised device coordinates (``ndc_rays``,
focal fx of camera 0 used for both axes, near plane 1), box (-2, -2, -1)..(2, 2, 1) as in the
authors' code; t in [0, 1] spans NDC depth [-1, 1].

``box`` (object-centric captures): world rays, an axis-aligned world box around the content.

``contracted`` (unbounded 360-degree captures): the slot of the mip-NeRF 360 contraction; it is
refused with a clear error until it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from ovs3d.errors import InputError
from ovs3d.scene.cameras import Cameras, ndc_rays
from ovs3d.scene.scene import Scene

SpaceName = Literal["auto", "ndc", "box", "contracted"]
NDC_BOX = ((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0))


@dataclass(frozen=True)
class RaySpace:
    """A ray space: its grid-coordinate bounds ``box`` ((min x, y, z), (max x, y, z)); ``name`` is the kind."""

    box: tuple[tuple[float, float, float], tuple[float, float, float]]
    name: ClassVar[str] = "world"

    def box_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[2, 3] float32 (min, max) corners of the grid coordinates."""
        return torch.tensor(self.box, dtype=torch.float32, device=device)

    def rays(self, cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays [B, 3] (origins, unnormalised directions) through image points (u, v) [B] of cameras ``view`` [B]."""
        return cameras.rays(view, u, v)

    def warp(self, xyz: torch.Tensor) -> torch.Tensor:
        """Points [M, 3] on the rays -> grid coordinates [M, 3] (the identity here)."""
        return xyz

    def to_scene(self, xyz: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """Grid coordinates [M, 3] -> the scene's (normalised) world coordinates [M, 3]: the inverse of the
        ray and point warps, for the ``cameras`` whose rays were warped (the identity here)."""
        return xyz

    def to_dict(self) -> dict:
        return {"name": self.name, "box": [list(self.box[0]), list(self.box[1])]}


@dataclass(frozen=True)
class NDCSpace(RaySpace):
    """Forward-facing scenes: rays in NDC (``ndc_rays`` with camera 0's focal, as the authors)."""

    box: tuple[tuple[float, float, float], tuple[float, float, float]] = NDC_BOX
    name: ClassVar[str] = "ndc"

    def rays(self, cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        origins, dirs = cameras.rays(view, u, v)
        return ndc_rays(origins, dirs, cameras.fx[0], cameras.width, cameras.height)

    def to_scene(self, xyz: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """Inverse NDC (near plane 1, a = -2 f / W, b = -2 f / H as in ``ndc_rays``): z' = 1 + 2 / Z gives
        Z = 2 / (z' - 1), then X = x' Z / a, Y = y' Z / b. Points at z' >= 1 are at infinity (inf here)."""
        f = cameras.fx[0].to(xyz)
        z = 2.0 / (xyz[:, 2] - 1.0).clamp(max=0.0)
        x = xyz[:, 0] * z / (-2.0 * f / cameras.width)
        y = xyz[:, 1] * z / (-2.0 * f / cameras.height)
        return torch.stack([x, y, z], dim=-1)


@dataclass(frozen=True)
class BoxSpace(RaySpace):
    """Object-centric scenes: world rays in an axis-aligned world box."""

    name: ClassVar[str] = "box"


def space_from_dict(values: dict) -> RaySpace:
    """The ray space stored by ``RaySpace.to_dict`` (in a checkpoint)."""
    box = tuple(tuple(float(x) for x in corner) for corner in values["box"])
    kinds = {"ndc": NDCSpace, "box": BoxSpace}
    if values.get("name") not in kinds:
        raise ValueError(f"unknown ray space {values.get('name')!r}")
    return kinds[values["name"]](box=box)


def content_box(cameras: Cameras, bounds: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """A world box around what the cameras see: the bounding box of every camera's view frustum
    between its near and far depth bounds (the 4 image corners at both depths), so no visible content
    is outside it. Conservative: for captures around an object it holds the object and its surroundings."""
    corners_u = torch.tensor([0.0, cameras.width, 0.0, cameras.width])
    corners_v = torch.tensor([0.0, 0.0, cameras.height, cameras.height])
    points = []
    for i in range(len(cameras)):
        view = torch.full((4,), i, dtype=torch.long)
        origins, dirs = cameras.rays(view, corners_u, corners_v)   # camera-frame z of dirs is -1
        for depth in bounds[i]:
            points.append(origins + float(depth) * dirs)
    pts = torch.cat(points)
    return tuple(pts.amin(0).tolist()), tuple(pts.amax(0).tolist())


def choose_space(scene: Scene, name: SpaceName = "auto") -> tuple[RaySpace, str]:
    """The ray space of ``scene`` and the reason it was chosen. ``auto``: forward-facing captures
    (``scene.kind``, from ``scene/layout.py``'s detector) -> ndc; cameras around the content -> contracted."""
    if name == "auto":
        if scene.kind == "forward":
            return NDCSpace(), "ndc: every camera looks the same way (forward-facing capture)"
        name, reason = "contracted", "contracted: the cameras surround the content (360-degree capture)"
    else:
        reason = f"{name}: chosen with --reconstruct.space"
    if name == "ndc":
        return NDCSpace(), reason
    if name == "box":
        return BoxSpace(box=content_box(scene.cameras, scene.bounds)), reason
    raise InputError(scene.root, f"this scene needs the contracted ray space ({reason}), which is not built yet",
                     "pass a forward-facing capture, or --reconstruct.space box for an object-centric one")
