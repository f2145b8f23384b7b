"""Volume rendering with packed samples: march (samples -> weights) and composite (weighted sums).

For a ray with samples i = 0..S-1 at world spacing delta (the marching step), densities sigma_i and the
distance scale s (25):

    tau_i   = sigma_i * delta * s
    alpha_i = 1 - exp(-tau_i)                       opacity of sample i
    T_i     = exp(-sum_{j<i} tau_j) = prod_{j<i} (1 - alpha_j)   transmittance
    w_i     = alpha_i T_i                            weight;  acc = sum_i w_i in [0, 1]

    C = sum_i w_i c_i + (1 - acc) * background
    depth = sum_i w_i t_i + (1 - acc) * t_far        (the ray's box exit; the authors' version adds
                                                      (1 - acc) * d'_z by mistake)

``march`` works on any ``RadianceField`` (``field/base.py``) and evaluates as little as possible:
rays come in the field's ray space; samples come only from inside the field's box
(``render/samplers.py``) and are warped to grid coordinates by the space; samples in empty cells of
the field's occupancy grid are dropped *before*
density is evaluated (they get sigma = 0); a ray stops once its transmittance falls to the threshold
(no later sample could be kept); the result keeps only samples whose weight exceeds ``weight_threshold``
(1e-4, rayMarch_weight_thres), in a packed layout (one row per kept sample with its
ray index). ``composite`` sums any per-sample quantity [M, D] into its rays, so colour, appearance
features or semantic scores all go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ovs3d.field.base import RadianceField, composite
from ovs3d.render.samplers import ray_samples


@dataclass
class RaySamples:
    """Packed samples of a batch of ``n_rays`` rays (M kept samples).

    Attributes:
        ray_index: [M] long, the ray of each sample (non-decreasing).
        t: [M] ray parameter of each sample.
        xyz: [M, 3] positions in the field's unit coordinates ([-1, 1]^3).
        weights: [M] compositing weights w_i (only those above the threshold).
        accumulation: [n_rays] sum of *all* weights of each ray (also the dropped ones).
        depth: [n_rays] sum_i w_i t_i + (1 - acc) t_far over all samples.
        n_rays: number of rays.
        n_candidates: in-box samples generated; n_density: samples whose density was evaluated.
    """

    ray_index: torch.Tensor
    t: torch.Tensor
    xyz: torch.Tensor
    weights: torch.Tensor
    accumulation: torch.Tensor
    depth: torch.Tensor
    n_rays: int
    n_candidates: int
    n_density: int

    @property
    def n_kept(self) -> int:
        return int(self.ray_index.shape[0])


MARCH_CHUNK = 64
"""Samples per ray evaluated at a time by ``march`` before the rays that stopped are dropped."""


def march(field: RadianceField, origins: torch.Tensor, dirs: torch.Tensor, step: float, generator: torch.Generator | None = None,
          skip_empty: bool = True, weight_threshold: float = 1e-4) -> RaySamples:
    """Sample rays inside the field's box and compute compositing weights.

    Front to back, ``MARCH_CHUNK`` samples per ray at a time, carrying each ray's optical depth
    D = sum_j tau_j; a ray stops once T = exp(-D) <= ``weight_threshold`` (early termination): every later
    weight w_i = alpha_i T_i <= T would be dropped anyway, so the kept samples are the same as without
    stopping, and acc and depth differ by less than the threshold (the unseen remainder of the ray).

    Args:
        field: a radiance field.
        origins, dirs: [B, 3] rays in the field's ray space (``space.rays``).
        step: marching step (grid coordinates).
        generator: per-ray jitter (training); None = midpoints (evaluation).
        skip_empty: drop samples in empty occupancy cells before evaluating density.
        weight_threshold: keep samples with weight > threshold; a negative value keeps every sample
            (and never stops a ray).
    """
    n_rays = origins.shape[0]
    t, valid, _, t_far = ray_samples(field.space, origins, dirs, field.box, step, generator)
    n_per_ray = t.shape[1]
    active = torch.arange(n_rays, device=origins.device)
    depth_optical = origins.new_zeros(n_rays)
    accumulation, depth = origins.new_zeros(n_rays), origins.new_zeros(n_rays)
    pieces, n_candidates, n_density = [], 0, 0
    for c0 in range(0, n_per_ray, MARCH_CHUNK):
        if active.numel() == 0:
            break
        chunk_t, chunk_valid = t[active, c0:c0 + MARCH_CHUNK], valid[active, c0:c0 + MARCH_CHUNK]
        width = chunk_t.shape[1]
        flat = chunk_valid.reshape(-1).nonzero().squeeze(1)                  # [K] indices into [A * width]
        n_candidates += int(flat.shape[0])
        ray = active[torch.div(flat, width, rounding_mode="floor")]          # [K] the ray of each sample
        t_flat = chunk_t.reshape(-1)[flat]
        xyz_grid = field.space.warp(origins[ray] + t_flat[:, None] * dirs[ray])
        if skip_empty and field.occupancy is not None:
            keep = field.occupancy.occupied(xyz_grid)
            flat, ray, t_flat, xyz_grid = flat[keep], ray[keep], t_flat[keep], xyz_grid[keep]
        n_density += int(flat.shape[0])
        xyz = field.normalize(xyz_grid)
        sigma = field.density(xyz)
        tau = origins.new_zeros(active.numel() * width).index_copy(0, flat, sigma * (step * field.distance_scale))
        tau = tau.view(active.numel(), width)
        before = depth_optical[active, None] + torch.cumsum(tau, dim=1) - tau
        weights = (1 - torch.exp(-tau)) * torch.exp(-before)                   # [A, width]
        accumulation = accumulation.index_add(0, active, weights.sum(1))
        depth = depth.index_add(0, active, (weights * chunk_t).sum(1))
        depth_optical = depth_optical.index_add(0, active, tau.sum(1))
        w = weights.reshape(-1)[flat]
        kept = w > weight_threshold if weight_threshold >= 0 else torch.ones_like(w, dtype=torch.bool)
        pieces.append((ray[kept] * n_per_ray + c0 + flat[kept] % width, t_flat[kept], xyz[kept], w[kept]))
        if weight_threshold >= 0:
            active = active[torch.exp(-depth_optical[active].detach()) > weight_threshold]
    depth = depth + (1 - accumulation) * t_far.clamp(min=0)
    order_key, t_kept, xyz_kept, w_kept = (torch.cat(p) for p in zip(*pieces)) if pieces else (
        origins.new_zeros(0, dtype=torch.long), origins.new_zeros(0), origins.new_zeros(0, 3), origins.new_zeros(0))
    order = torch.argsort(order_key)                                     # ray-major, front to back
    return RaySamples(ray_index=torch.div(order_key[order], max(n_per_ray, 1), rounding_mode="floor"), t=t_kept[order],
                      xyz=xyz_kept[order], weights=w_kept[order], accumulation=accumulation, depth=depth,
                      n_rays=n_rays, n_candidates=n_candidates, n_density=n_density)


def render_rays(field: RadianceField, origins: torch.Tensor, dirs: torch.Tensor, step: float,
                background: torch.Tensor | float = 0.0, generator: torch.Generator | None = None,
                skip_empty: bool = True, weight_threshold: float = 1e-4) -> dict[str, torch.Tensor]:
    """Colour, depth and accumulation of rays [B, 3].

    The colour at each kept sample is ``field.shade(field.appearance(xyz), unit dir)``;
    C = composite(colour) + (1 - acc) * background, clamped to [0, 1].
    Returns {"rgb": [B, 3], "depth": [B], "acc": [B], "samples": RaySamples}.
    """
    samples = march(field, origins, dirs, step, generator, skip_empty, weight_threshold)
    viewdirs = dirs / dirs.norm(dim=-1, keepdim=True)
    rgb_samples = field.shade(field.appearance(samples.xyz), viewdirs[samples.ray_index])
    rgb = composite(rgb_samples, samples.weights, samples.ray_index, samples.n_rays)
    background = torch.as_tensor(background, dtype=rgb.dtype, device=rgb.device)
    rgb = rgb + (1 - samples.accumulation)[:, None] * background
    return {"rgb": rgb.clamp(0, 1), "depth": samples.depth, "acc": samples.accumulation, "samples": samples}
