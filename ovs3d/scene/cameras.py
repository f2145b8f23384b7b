"""Pinhole cameras, pixel rays and the NDC warp for forward-facing scenes.

Convention (used everywhere inside ovs3d; other conventions are converted at the file boundary):
camera-to-world matrices ``c2w`` of shape [N, 3, 4] whose rotation columns are the camera's
(right, up, back) axes in world coordinates and whose last column is the camera centre. The camera
looks along its -z axis, +y is up (the OpenGL / NeRF convention). Pixel (i, j) = (column, row) has
its centre at continuous image coordinates (u, v) = (i + 0.5, j + 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Cameras:
    """N pinhole cameras sharing one image size.

    Attributes:
        c2w: [N, 3, 4] camera-to-world (right, up, back, centre), float32.
        fx, fy: [N] focal lengths in pixels.
        cx, cy: [N] principal point in pixels (continuous coordinates; the image centre is (W/2, H/2)).
        width, height: image size in pixels.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        n = self.c2w.shape[0]
        if self.c2w.shape != (n, 3, 4):
            raise ValueError(f"c2w must be [N, 3, 4], got {tuple(self.c2w.shape)}")
        for name in ("fx", "fy", "cx", "cy"):
            value = torch.as_tensor(getattr(self, name), dtype=self.c2w.dtype, device=self.c2w.device)
            setattr(self, name, value.expand(n).clone() if value.ndim == 0 else value)

    @classmethod
    def from_focal(cls, c2w: torch.Tensor, focal: float, width: int, height: int) -> "Cameras":
        """Cameras with one focal length for both axes and the principal point at the image centre."""
        return cls(c2w, torch.tensor(focal), torch.tensor(focal), torch.tensor(width / 2),
                   torch.tensor(height / 2), width, height)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        idx = torch.as_tensor(index).reshape(-1)
        return replace(self, c2w=self.c2w[idx], fx=self.fx[idx], fy=self.fy[idx], cx=self.cx[idx],
                       cy=self.cy[idx])

    @property
    def centers(self) -> torch.Tensor:
        """[N, 3] camera centres in world coordinates."""
        return self.c2w[:, :, 3]

    def to(self, device: torch.device | str) -> "Cameras":
        return replace(self, c2w=self.c2w.to(device), fx=self.fx.to(device), fy=self.fy.to(device),
                       cx=self.cx.to(device), cy=self.cy.to(device))

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for images resized to (width, height): intrinsics scale per axis."""
        sx, sy = width / self.width, height / self.height
        return replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy,
                       width=width, height=height)

    def downsampled(self, factor: float) -> "Cameras":
        """The same cameras for images ``factor`` times smaller per side (at least 8 pixels)."""
        return self.resized(max(int(self.width / factor), 8), max(int(self.height / factor), 8))

    def rays(self, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World rays through continuous image points.

        Args:
            view: [B] camera indices; u, v: [B] image coordinates (pixel centre = index + 0.5).
        Returns:
            origins [B, 3] (camera centres) and unnormalised directions [B, 3] whose camera-frame
            z component is -1: d = R @ ((u - cx) / fx, -(v - cy) / fy, -1).
        """
        view = view.long()
        x = (u - self.cx[view]) / self.fx[view]
        y = -(v - self.cy[view]) / self.fy[view]
        dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        rot = self.c2w[view, :, :3]
        dirs = torch.einsum("bij,bj->bi", rot, dirs_cam)
        return self.c2w[view, :, 3].clone(), dirs

    def pixel_grid(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-centre coordinates (u, v), each [H, W]."""
        dev = self.c2w.device
        v, u = torch.meshgrid(torch.arange(self.height, device=dev, dtype=self.c2w.dtype) + 0.5,
                              torch.arange(self.width, device=dev, dtype=self.c2w.dtype) + 0.5,
                              indexing="ij")
        return u, v

    def image_rays(self, view: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All pixel-centre rays of one view: origins and directions, each [H, W, 3]."""
        u, v = self.pixel_grid()
        idx = torch.full((u.numel(),), view, dtype=torch.long, device=u.device)
        o, d = self.rays(idx, u.reshape(-1), v.reshape(-1))
        return o.reshape(self.height, self.width, 3), d.reshape(self.height, self.width, 3)


def ndc_rays(origins: torch.Tensor, dirs: torch.Tensor, focal: float | torch.Tensor, width: int, height: int,
             near: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """NeRF's normalised device coordinates for forward-facing scenes (method spec section 2.4).

    The origin first moves along the ray onto the plane z = -near; then, with f = ``focal`` (fx, used
    for both axes as the authors do):
        o' = (-f/(W/2) * ox/oz, -f/(H/2) * oy/oz, 1 + 2 near/oz)
        d' = (-f/(W/2) * (dx/dz - ox/oz), -f/(H/2) * (dy/dz - oy/oz), -2 near/oz)
    so every ray starts at NDC z = -1 and t in [0, 1] spans NDC depth [-1, 1] (z = -near .. infinity).

    Args: origins, dirs [..., 3] world rays. Returns (o', d'), each [..., 3].
    """
    t = -(near + origins[..., 2]) / dirs[..., 2]
    origins = origins + t[..., None] * dirs
    ox, oy, oz = origins.unbind(-1)
    dx, dy, dz = dirs.unbind(-1)
    ax, ay = -2.0 * focal / width, -2.0 * focal / height
    o_ndc = torch.stack([ax * ox / oz, ay * oy / oz, 1.0 + 2.0 * near / oz], dim=-1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), -2.0 * near / oz], dim=-1)
    return o_ndc, d_ndc
