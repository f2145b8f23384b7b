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

``box`` (object-centric captures with object masks): world rays, an axis-aligned world box around the
content (the cube of the framing sphere, below, when masks remove the background).

``contracted`` (unbounded 360-degree captures): rays in units of the region of interest ``radius``
(x' = x / radius, the 360 normalisation already put its centre at the origin), then mip-NeRF 360's
contraction with the L-infinity norm (grid-friendly, as nerfstudio's ``SceneContraction``):

    contract(x) = x                                  if ||x||_inf <= 1
                  (2 - 1 / ||x||_inf) x / ||x||_inf  otherwise

the identity inside the unit cube, continuous, and onto the open cube (-2, 2)^3: the grid, its
occupancy and the VM planes live there (box (-2, -2, -2)..(2, 2, 2)). Along a ray far away
||contract(x)|| ~ 2 - 1/t, so samples equally spaced in contracted space (``render/samplers.py``) are
uniform in t inside the unit cube and uniform in disparity 1/t beyond it; the outer shell of the cube
holds the far background ("sky") as ordinary learned samples.

The region of interest is the framing sphere: the sphere around the look-at centre that exactly fills the
narrower field of view of a camera at the median camera distance, radius = median_i ||c_i|| sin(fov / 2).
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
    unbounded: ClassVar[bool] = False
    """True when rays do not end at the box (the sampler then spaces samples in grid coordinates)."""

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


CONTRACTED_BOX = ((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0))


def contract(x: torch.Tensor) -> torch.Tensor:
    """L-infinity scene contraction of points [..., 3] (module docstring): into the open cube (-2, 2)^3."""
    norm = x.abs().amax(-1, keepdim=True)
    outside = norm > 1
    safe = norm.clamp_min(1.0)
    return torch.where(outside, (2 - 1 / safe) * x / safe, x)


@dataclass(frozen=True)
class ContractedSpace(RaySpace):
    """Unbounded scenes: world rays divided by ``radius`` (the region of interest becomes the unit ball),
    then ``contract``; the far end of a ray is where it leaves the cube ||x||_inf <= ``far``."""

    box: tuple[tuple[float, float, float], tuple[float, float, float]] = CONTRACTED_BOX
    radius: float = 1.0
    far: float = 64.0
    name: ClassVar[str] = "contracted"
    unbounded: ClassVar[bool] = True

    def rays(self, cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        origins, dirs = cameras.rays(view, u, v)
        return origins / self.radius, dirs / self.radius

    def warp(self, xyz: torch.Tensor) -> torch.Tensor:
        return contract(xyz)

    def to_scene(self, xyz: torch.Tensor, cameras: Cameras) -> torch.Tensor:
        """radius * contract^-1: beyond the unit cube, m = ||c||_inf gives ||x||_inf = 1 / (2 - m), so
        x = c / (m (2 - m)); points on the outer surface m = 2 are at infinity (inf here)."""
        m = xyz.abs().amax(-1, keepdim=True)
        scale = torch.where(m > 1, 1 / (m.clamp_min(1.0) * (2 - m)), torch.ones_like(m))
        return self.radius * xyz * scale

    def to_dict(self) -> dict:
        return {**super().to_dict(), "radius": self.radius, "far": self.far}


def space_from_dict(values: dict) -> RaySpace:
    """The ray space stored by ``RaySpace.to_dict`` (in a checkpoint)."""
    box = tuple(tuple(float(x) for x in corner) for corner in values["box"])
    name = values.get("name")
    if name == "contracted":
        return ContractedSpace(box=box, radius=float(values["radius"]), far=float(values["far"]))
    kinds = {"ndc": NDCSpace, "box": BoxSpace}
    if name not in kinds:
        raise ValueError(f"unknown ray space {name!r}")
    return kinds[name](box=box)


def framing_radius(cameras: Cameras) -> float:
    """Radius of the framing sphere (module docstring): median camera distance to the origin (the 360
    normalisation's look-at centre) times sin of half the narrower field of view."""
    half_fov = float(torch.atan(torch.minimum(cameras.width / (2 * cameras.fx), cameras.height / (2 * cameras.fy))).min())
    return float(cameras.centers.norm(dim=-1).median()) * float(np.sin(half_fov))


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


def object_box(cameras: Cameras, margin: float = 1.2) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The cube around the framing sphere (``margin`` times its radius) at the look-at centre (the origin)."""
    r = margin * framing_radius(cameras)
    return (-r, -r, -r), (r, r, r)


def choose_space(scene: Scene, name: SpaceName = "auto") -> tuple[RaySpace, str]:
    """The ray space of ``scene`` and the reason it was chosen. ``auto``: forward-facing captures
    (``scene.kind``, from ``scene/layout.py``'s detector) -> ndc; cameras around the content with object
    masks -> box (the masks remove the background); without masks -> contracted."""
    if name == "auto":
        if scene.kind == "forward":
            return NDCSpace(), "ndc: every camera looks the same way (forward-facing capture)"
        if scene.object_masks is not None:
            name, reason = "box", "box: the cameras surround the content and masks/ removes the background"
        else:
            name, reason = "contracted", "contracted: the cameras surround the content (360-degree capture)"
    else:
        reason = f"{name}: chosen with --reconstruct.space"
    if name == "ndc":
        return NDCSpace(), reason
    if name == "box":
        box = object_box(scene.cameras) if scene.object_masks is not None else content_box(scene.cameras, scene.bounds)
        return BoxSpace(box=box), reason
    return ContractedSpace(radius=framing_radius(scene.cameras)), reason
