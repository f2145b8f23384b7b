"""Occupancy ("alpha mask") grid and box shrinking (method spec section 3.3).

The mask is built once the coarse geometry exists:

    1. alpha = 1 - exp(-sigma * step) at every node of the field's current grid (or a coarser one), where ``step`` is the
       marching step. Faithful TensoRF omits the distance scale (25) here, so the mask is 25x more
       permissive than the opacities used for rendering; ``scale_density=True`` includes it.
    2. 3x3x3 max-pool (stride 1), so a node is kept when any neighbour is kept.
    3. occupied = alpha >= threshold (1e-4).

A point is occupied when any of the 8 nodes of its cell is occupied, which is exactly where the
trilinear interpolation of the 0/1 node mask (the authors' lookup) is positive; the cell table is
precomputed so the lookup is a single index. Points outside the mask's box are empty.

Everything here is in the ray space's *grid coordinates* (``scene/rayspace.py``: NDC for forward-facing
scenes, contracted coordinates for unbounded ones), the coordinates of the field's box, never world
coordinates.

``occupied_box`` returns the bounding box of the occupied nodes, to which the field is then shrunk
(``TensoRF.shrink``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf


class OccupancyGrid:
    """Boolean node mask [Gz, Gy, Gx] over ``box`` [2, 3] in grid coordinates (nodes at the box corners,
    align_corners)."""

    def __init__(self, mask: torch.Tensor, box: torch.Tensor) -> None:
        if mask.ndim != 3 or min(mask.shape) < 2:
            raise ValueError(f"mask must be [Gz, Gy, Gx] with every size >= 2, got {tuple(mask.shape)}")
        self.mask = mask.bool()
        self.box = torch.as_tensor(box, dtype=torch.float32, device=mask.device).reshape(2, 3)
        # cell (i, j, k) is occupied when any of its 8 corner nodes is.
        self.cells = nnf.max_pool3d(self.mask[None, None].float(), kernel_size=2, stride=1)[0, 0].bool()
        self._cell_dims = torch.tensor([self.cells.shape[2], self.cells.shape[1], self.cells.shape[0]],
                                       device=mask.device)
        self._strides = torch.tensor([1, self.cells.shape[2], self.cells.shape[2] * self.cells.shape[1]],
                                     device=mask.device)
        self._flat = self.cells.reshape(-1)

    @property
    def node_reso(self) -> tuple[int, int, int]:
        """Nodes per axis (x, y, z)."""
        return (self.mask.shape[2], self.mask.shape[1], self.mask.shape[0])

    def to(self, device: torch.device | str) -> "OccupancyGrid":
        return OccupancyGrid(self.mask.to(device), self.box.to(device))

    def occupied(self, xyz: torch.Tensor) -> torch.Tensor:
        """[M] bool: whether each point [M, 3] (grid coordinates) lies in an occupied cell (False outside the box)."""
        rel = (xyz - self.box[0]) / (self.box[1] - self.box[0])
        inside = ((rel >= 0) & (rel <= 1)).all(-1)
        cell = (rel * self._cell_dims).long()
        cell = torch.minimum(cell.clamp(min=0), self._cell_dims - 1)
        return inside & self._flat[(cell * self._strides).sum(-1)]

    def fraction_occupied(self) -> float:
        return float(self.mask.float().mean())

    def occupied_box(self) -> torch.Tensor:
        """[2, 3] bounding box (grid coordinates) of the occupied nodes (the whole box when nothing is occupied)."""
        idx = self.mask.nonzero()
        if idx.numel() == 0:
            return self.box.clone()
        reso = torch.tensor(self.node_reso, device=self.box.device, dtype=torch.float32)
        units = (self.box[1] - self.box[0]) / (reso - 1)
        lo = idx.amin(0).flip(0).float()   # (z, y, x) -> (x, y, z)
        hi = idx.amax(0).flip(0).float()
        return torch.stack([self.box[0] + lo * units, self.box[0] + hi * units])


@torch.no_grad()
def build_occupancy(field, step: float, threshold: float = 1e-4, scale_density: bool = False,
                    reso: tuple[int, int, int] | None = None, chunk: int = 262144) -> OccupancyGrid:
    """Evaluate the field's density on its current grid and return the pooled, thresholded mask.

    Args:
        field: a ``TensoRF`` (uses ``dense_points``, ``normalize``, ``density``, ``distance_scale``).
        step: step length (grid coordinates) used for alpha = 1 - exp(-sigma * step [* distance_scale]).
        threshold: nodes with pooled alpha >= threshold are occupied (alpha_mask_thre).
        scale_density: include the distance scale (False = the TensoRF/3D-OVS quirk).
        reso: nodes per axis of the mask (default: the field's grid).
    """
    points = field.dense_points(reso)                  # [Gz, Gy, Gx, 3]
    flat = points.reshape(-1, 3)
    scale = field.distance_scale if scale_density else 1.0
    alpha = torch.empty(flat.shape[0], device=flat.device)
    for start in range(0, flat.shape[0], chunk):
        sigma = field.density(field.normalize(flat[start:start + chunk]))
        alpha[start:start + chunk] = 1 - torch.exp(-sigma * step * scale)
    alpha = alpha.view(points.shape[:3])
    pooled = nnf.max_pool3d(alpha[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
    return OccupancyGrid(pooled >= threshold, field.box.clone())
