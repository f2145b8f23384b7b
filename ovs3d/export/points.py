"""The labelled surface points of a stage-2 run, fused from the rendered training views.

Why rendered depth and not the density field: a point made from a pixel's ray carries the feature F that
``ovs3d test`` renders for that pixel, so the point cloud's labels are the labels of the evaluated 2D
segmentation, lifted; it lies on a surface some camera saw (the density grid also holds the unobserved
inside of objects, whose features nothing supervised, and floaters that no view shows, and needs a
scene-dependent density threshold); and its spacing follows the pixels, not the NDC grid, whose cells grow
with the square of the depth. The cost is one render per fused view, at the resolution stage 2 ran at.

Per ray with kept samples (t_i, w_i) (``render/volume.py``) the surface is the *median* depth, where the
accumulated opacity c(t) crosses 1/2, interpolated inside the crossing sample's interval of length dt:

    t* = t_i - dt/2 + dt (1/2 - c_{i-1}) / w_i,      c_{i-1} = sum_{j<i} w_j <= 1/2 < c_{i-1} + w_i

Rays whose opacity never reaches 1/2 (sky, holes) give no point. Unlike the expected depth (sum_i w_i t_i),
the median never places a point between a foreground edge and the background behind it. Its label is the
pixel's, and the pixels just outside an occluding contour carry the occluder's label while their median
lies on the background: those occlusion halos are found per view from the depth and label images and
dropped (``halo.py``, ``halo_angle``). The points of all fused views are de-duplicated on a voxel grid in
the input frame (``voxel``): one point per occupied voxel, the mean of its points' positions, colours and
class cosines.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as nnf
from tqdm import tqdm

from ovs3d.config import check_bounds
from ovs3d.export.frames import WorldFrame
from ovs3d.export.halo import halo_pixels, max_step
from ovs3d.export.select import ranges, scores
from ovs3d.render.camera import radiance_field
from ovs3d.render.volume import RaySamples, march
from ovs3d.scene.scene import Scene

AUTO_VOXELS = 512
"""With ``voxel`` 0 the de-duplication voxel is the points' extent (1st-99th percentile box diagonal) / this."""


@dataclass
class PointConfig:
    """How the surface points are made (``--export.points.*``)."""

    max_views: int = 6
    """Training views fused, evenly spread over the training views (0: all of them)."""
    min_opacity: float = 0.5
    """A ray gives a point when its accumulated opacity reaches this (at least 0.5: the median must exist)."""
    voxel: float = 0.0
    """De-duplication voxel in input-pose units (0: the points' extent / 512)."""
    halo_angle: float = 5.0
    """Occlusion halos (``halo.py``): adjacent pixels are on one surface unless their depths step by more than
    a plane seen at this angle (degrees) to the rays gives; 0 keeps the halos. At 5 degrees a surface is
    foreshortened 11x, which a camera sees as an occluding contour, not as a surface."""
    chunk: int = 8192
    """Rays per rendering chunk."""

    def check(self) -> None:
        check_bounds(self, "export.points", at_least={"max_views": 0, "min_opacity": 0.5, "voxel": 0, "chunk": 1,
                                                      "halo_angle": 0},
                     at_most={"min_opacity": 1, "halo_angle": 89})


@dataclass
class SurfacePoints:
    """De-duplicated surface points.

    Attributes:
        xyz: [N, 3] float64 in the input poses' frame; grid: [N, 3] float32 the field's grid coordinates.
        rgb: [N, 3] float32 rendered colour in [0, 1]; cosines: [N, T] float32 mean cos(F, t) per text.
        observations: [N] rays merged into each point; voxel: the de-duplication voxel (input units).
        halo: rays dropped as occlusion halos before the de-duplication.
    """

    xyz: np.ndarray
    grid: np.ndarray
    rgb: np.ndarray
    cosines: np.ndarray
    observations: np.ndarray
    voxel: float
    halo: int = 0

    def __len__(self) -> int:
        return int(self.xyz.shape[0])


def median_depth(samples: RaySamples, dt: torch.Tensor, min_opacity: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(t* [B], hit [B] bool) of the rays of packed ``samples`` (module docstring); dt [B] = step / ||d||."""
    w = samples.weights.double()
    ray = samples.ray_index
    n = samples.n_rays
    total = w.new_zeros(n).index_add(0, ray, w)
    cum = torch.cumsum(w, 0)
    before_all = cum - w                                              # global sum before each sample
    first = torch.full((n,), w.numel(), dtype=torch.long, device=w.device)
    first = first.scatter_reduce(0, ray, torch.arange(w.numel(), device=w.device), reduce="amin")
    offset = before_all[first.clamp(max=max(w.numel() - 1, 0))] if w.numel() else w.new_zeros(n)
    before = before_all - offset[ray]                                 # sum over the ray's earlier samples
    crossing = (before < 0.5) & (before + w >= 0.5)
    t = samples.t.new_zeros(n)
    hit = torch.zeros(n, dtype=torch.bool, device=w.device)
    idx = crossing.nonzero().squeeze(1)
    r = ray[idx]
    frac = ((0.5 - before[idx]) / w[idx]).clamp(0, 1).to(t)
    t[r] = samples.t[idx] + (frac - 0.5) * dt[r]
    hit[r] = True
    return t, hit & (total >= min_opacity)


@torch.no_grad()
def view_points(model, cameras, view: int, step: float, text: torch.Tensor, chunk: int,
                min_opacity: float = 0.5) -> dict[str, torch.Tensor]:
    """The surface points of one view's pixels: {"pixel": [K] row-major pixel index, "grid": [K, 3] grid
    coordinates, "rgb": [K, 3], "cosines": [K, T] cos(F, t) of the rendered unit feature F with unit texts
    ``text`` [T, D]}."""
    field = model.field
    u, v = cameras.pixel_grid()
    u, v = u.reshape(-1), v.reshape(-1)
    index = torch.full_like(u, view, dtype=torch.long)
    parts: dict[str, list[torch.Tensor]] = {"pixel": [], "grid": [], "rgb": [], "cosines": []}
    for s in range(0, u.numel(), chunk):
        o, d = field.space.rays(cameras, index[s:s + chunk], u[s:s + chunk], v[s:s + chunk])
        samples = march(field, o, d, step)
        t, hit = median_depth(samples, step / d.norm(dim=-1).clamp_min(1e-12), min_opacity)
        if not bool(hit.any()):
            continue
        used = hit[samples.ray_index]                                 # only the rays that give a point are shaded
        rank = torch.cumsum(hit, 0) - 1                               # ray -> its row among the hit rays
        ray = samples.ray_index[used]
        out = model.render(samples.xyz[used], samples.weights[used], rank[ray], int(hit.sum()),
                           viewdirs=nnf.normalize(d, dim=-1)[ray], with_selection=False)
        features = nnf.normalize(out["features"], dim=-1)
        parts["pixel"].append(hit.nonzero().squeeze(1) + s)
        parts["grid"].append(field.space.warp(o[hit] + t[hit, None] * d[hit]))
        parts["rgb"].append(out["rgb"].clamp(0, 1))
        parts["cosines"].append(features @ text.to(features).t())
    if not parts["grid"]:
        return {"pixel": u.new_zeros(0, dtype=torch.long), "grid": u.new_zeros(0, 3), "rgb": u.new_zeros(0, 3),
                "cosines": u.new_zeros(0, text.shape[0])}
    return {key: torch.cat(values).cpu() if key == "pixel" else torch.cat(values).float().cpu()
            for key, values in parts.items()}


def spread_views(views: list[int], limit: int) -> list[int]:
    """At most ``limit`` of ``views``, evenly spread (first and last kept); all of them when ``limit`` is 0."""
    if limit <= 0 or len(views) <= limit:
        return list(views)
    return [views[int(round(i))] for i in np.linspace(0, len(views) - 1, limit)]


def auto_voxel(xyz: np.ndarray) -> float:
    """The points' extent (diagonal of their 1st-99th percentile box) / ``AUTO_VOXELS``."""
    lo, hi = np.percentile(xyz, [1, 99], axis=0)
    return float(max(np.linalg.norm(hi - lo), 1e-9) / AUTO_VOXELS)


def voxel_mean(xyz: np.ndarray, voxel: float, *values: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """(points per voxel [N], [the mean of xyz and of each of ``values`` per occupied voxel]), voxels of
    side ``voxel`` over xyz [M, 3]; voxels in order of their first point."""
    cells = np.floor((xyz - xyz.min(0)) / voxel).astype(np.int64)
    _, first, inverse, counts = np.unique(cells, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(np.argsort(first))                            # voxel -> rank of its first point
    inverse = order[inverse.reshape(-1)]
    counts = counts[np.argsort(order)]
    means = []
    for array in (xyz, *values):
        total = np.zeros((len(counts), array.shape[1]), dtype=np.float64)
        np.add.at(total, inverse, array)
        means.append((total / counts[:, None]).astype(array.dtype))
    return counts, means


def drop_halos(parts: list[dict], cameras, views: list[int], n_classes: int, rule: str, angle: float) -> int:
    """Remove the occlusion halos (``halo.py``) from each view's part ({"pixel", "depth", "cosines", ...}, in
    place), labelling each ray under ``rule`` over the class columns (relevancy ranges over all the rays);
    returns the number of rays dropped."""
    if angle <= 0 or n_classes == 0 or not any(len(p["pixel"]) for p in parts):
        return 0
    lohi = ranges(np.concatenate([p["cosines"][:, :n_classes] for p in parts]))
    h, w = cameras.height, cameras.width
    dropped = 0
    for part, view in zip(parts, views):
        depth, label = np.full(h * w, np.nan), np.full(h * w, -1, dtype=np.int64)
        depth[part["pixel"]] = part["depth"]
        label[part["pixel"]] = scores(part["cosines"][:, :n_classes], rule, lohi).argmax(1)
        halo = halo_pixels(depth.reshape(h, w), label.reshape(h, w), max_step(float(cameras.fx[view]), angle))
        keep = ~halo.reshape(-1)[part["pixel"]]
        dropped += int((~keep).sum())
        for key in part:
            part[key] = part[key][keep]
    return dropped


def surface_points(model, scene: Scene, step: float, text: torch.Tensor, frame: WorldFrame,
                   config: PointConfig | None = None, progress: bool = True, n_classes: int | None = None,
                   rule: str = "cosine") -> SurfacePoints:
    """Render the fused training views of ``scene`` (at the run's resolution), keep each ray's median
    surface point, drop the occlusion halos (labels: ``rule`` over the first ``n_classes`` texts, default
    all), map the points to the input frame and de-duplicate (module docstring)."""
    config = config or PointConfig()
    device = next(model.parameters()).device
    cameras = scene.cameras.to(device)
    views = spread_views(scene.train_views, config.max_views)
    parts = []
    with radiance_field(model).frozen():          # every view renders from the same lookup volumes
        for view in tqdm(views, desc="export: points", unit="view", disable=not progress, leave=False):
            part = view_points(model, cameras, view, step, text, config.chunk, config.min_opacity)
            scene_xyz = frame.scene_points(part["grid"])
            keep = frame.kept(scene_xyz)
            centre = frame.cameras.centers[view].double()
            parts.append({"pixel": part["pixel"][keep].numpy(), "xyz": frame.to_input(scene_xyz[keep].numpy()),
                          "depth": (scene_xyz[keep] - centre).norm(dim=-1).numpy(), "grid": part["grid"][keep].numpy(),
                          "rgb": part["rgb"][keep].numpy(), "cosines": part["cosines"][keep].numpy()})
    n_classes = text.shape[0] if n_classes is None else n_classes
    halo = drop_halos(parts, frame.cameras, views, n_classes, rule, config.halo_angle)
    xyz = np.concatenate([p["xyz"] for p in parts]) if parts else np.zeros((0, 3))
    if len(xyz) == 0:
        return SurfacePoints(xyz, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32),
                             np.zeros((0, text.shape[0]), np.float32), np.zeros(0, np.int64), config.voxel, halo)
    voxel = config.voxel or auto_voxel(xyz)
    counts, (xyz, grid, rgb, cosines) = voxel_mean(xyz, voxel, *(np.concatenate([p[key] for p in parts])
                                                                 for key in ("grid", "rgb", "cosines")))
    return SurfacePoints(xyz, grid, rgb, cosines, counts, voxel, halo)
