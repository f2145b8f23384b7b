"""Per-class meshes of a stage-2 run: marching cubes on the density, restricted to each class's nodes.

On the nodes x_n of a grid over the field's box (the field's own grid, at most ``max_nodes`` per axis):

    alpha_n = 1 - exp(-sigma(x_n) * step * distance_scale)      the opacity of one marching step
    label_n = argmax_k s_k(x_n)                                  s the label rule's scores (``select.py``) of
                                                                 the point feature F(x_n) = head(a(x_n))
    V_k     = alpha where label = k, else 0                      padded by one node of zeros

and the mesh of class k is the ``level`` iso-surface of V_k (marching cubes, skimage), its vertices
mapped to the input frame (``frames.py``). The padding closes every surface, so each mesh is watertight
(closed, every edge shared by two faces) unless the far cut of an NDC scene (``frames.FAR_MARGIN``)
removes faces. Vertex colours are the radiance field's colour sigmoid(MLP(a(x), d)) seen along d, the
direction of the recentred camera (``WorldFrame.view_dirs``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from ovs3d.config import check_bounds
from ovs3d.export.frames import WorldFrame

ACTIVE_FRACTION = 0.25
"""Nodes whose opacity is under this fraction of the level get no label (they only pad the volume)."""


@dataclass
class MeshConfig:
    """How the meshes are made (``--export.mesh.*``)."""

    max_nodes: int = 160
    """Grid nodes per axis at most (the field's own grid when it is smaller; 0: always the field's grid)."""
    level: float = 0.3
    """Iso-level on the opacity of one marching step, in (0, 1)."""
    chunk: int = 65536
    """Grid nodes per evaluation chunk."""

    def check(self) -> None:
        check_bounds(self, "export.mesh", at_least={"max_nodes": 0, "chunk": 1}, above={"level": 0}, at_most={"level": 0.999})


@dataclass
class Mesh:
    """A triangle mesh: vertices [V, 3] float64 (input frame), faces [F, 3] int64, colours [V, 3] uint8."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray


@dataclass
class NodeVolume:
    """The grid of the meshes: node positions [Gz, Gy, Gx, 3] (grid coordinates), opacities alpha
    [Gz, Gy, Gx], the active nodes' flat indices [K] and their cosines [K, T] with the export's texts."""

    points: torch.Tensor
    alpha: np.ndarray
    active: np.ndarray
    cosines: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.alpha.shape)


def node_resolution(field, max_nodes: int) -> tuple[int, int, int]:
    """(x, y, z) nodes: the field's grid, scaled down uniformly so no axis exceeds ``max_nodes`` (> 0)."""
    reso = np.asarray(field.reso, dtype=np.float64)
    if max_nodes > 0 and reso.max() > max_nodes:
        reso = np.maximum(np.round(reso * max_nodes / reso.max()), 2)
    return tuple(int(r) for r in reso)


@torch.no_grad()
def node_volume(model, step: float, text: torch.Tensor, level: float, config: MeshConfig,
                progress: bool = True) -> NodeVolume:
    """Opacities of every node and the cosines cos(F(x_n), t) of the nodes above ACTIVE_FRACTION * level."""
    field = model.field
    points = field.dense_points(node_resolution(field, config.max_nodes))
    flat = points.reshape(-1, 3)
    alpha = torch.zeros(flat.shape[0])
    chunks = range(0, flat.shape[0], config.chunk)
    with field.frozen():
        for s in tqdm(chunks, desc="export: density", unit="chunk", disable=not progress, leave=False):
            sigma = field.density(field.normalize(flat[s:s + config.chunk]))
            alpha[s:s + config.chunk] = (1 - torch.exp(-sigma * step * field.distance_scale)).cpu()
    active = (alpha >= ACTIVE_FRACTION * level).nonzero().squeeze(1)
    cosines = []
    for s in tqdm(range(0, active.numel(), config.chunk), desc="export: node features", unit="chunk",
                  disable=not progress, leave=False):
        xyz = field.normalize(flat[active[s:s + config.chunk].to(flat.device)])
        f = model.point_features(xyz)
        f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cosines.append((f @ text.to(f).t()).cpu())
    cos = torch.cat(cosines).numpy() if cosines else np.zeros((0, text.shape[0]), np.float32)
    return NodeVolume(points.cpu(), alpha.view(points.shape[:3]).numpy(), active.numpy(), cos)


@torch.no_grad()
def iso_mesh(name: str, volume: NodeVolume, members: np.ndarray, level: float, model, frame: WorldFrame) -> Mesh:
    """The ``level`` iso-surface of alpha restricted to the active nodes with ``members`` [K] True."""
    from skimage.measure import marching_cubes

    restricted = np.zeros(volume.alpha.size, dtype=np.float32)
    keep = volume.active[members]
    restricted[keep] = volume.alpha.reshape(-1)[keep]
    restricted = np.pad(restricted.reshape(volume.shape), 1)
    if restricted.max() <= level:
        return Mesh(name, np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8))
    verts, faces, _, _ = marching_cubes(restricted, level)
    field = model.field
    box = volume.points[0, 0, 0], volume.points[-1, -1, -1]
    spacing = (box[1] - box[0]) / (torch.tensor(volume.shape[::-1], dtype=torch.float32) - 1)
    grid = box[0] + (torch.from_numpy(verts[:, ::-1].copy()).float() - 1) * spacing     # (z, y, x) index -> grid
    xyz, kept = frame.grid_to_input(grid)
    remap = np.full(len(verts), -1, dtype=np.int64)
    remap[kept.numpy()] = np.arange(int(kept.sum()))
    faces = remap[faces]
    faces = faces[(faces >= 0).all(1)]
    device = next(model.parameters()).device
    g = grid[kept].to(device)
    rgb = field.shade(field.appearance(field.normalize(g)), frame.view_dirs(g)).clamp(0, 1)
    return Mesh(name, xyz, faces.astype(np.int64), (rgb.cpu().numpy() * 255 + 0.5).astype(np.uint8))
