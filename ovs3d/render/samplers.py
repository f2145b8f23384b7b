"""Ray samples confined to the scene box, stratified with per-ray jitter.

Every ray is clipped to the axis-aligned box by the slab test, giving its entry and exit parameters
t_near <= t <= t_far (t_near >= 0). Samples are spaced by a fixed world step ``step`` (the marching step,
box diagonal / N with N = int(||reso|| / step_ratio), as in TensoRF), so a ray's in-box chord of length
L gets ceil(L / step) samples, at most N; training and evaluation use the same spacing. Sample i of ray b
sits at

    t_bi = t_near_b + (i + u_bi) * step / ||d_b||,   u_bi ~ U[0, 1) independently per ray and sample
                                                       (training), u = 1/2 (evaluation),

and samples with t_bi >= t_far_b are dropped. Unlike the authors' sampler (a shared 1 x N jitter over
t in [-0.5, 1.5] in NDC, half of it outside the box), no sample leaves the box and no two rays share
their jitter.

Unbounded (contracted) spaces: rays run from t = 0 until they leave the cube ||x||_inf <= far, and the
samples are equally spaced by ``step`` in *grid* (contracted) coordinates, so that the field's
tau_i = sigma_i step s holds there as in the bounded spaces. The contracted arc length
L(t) = int_0^t ||d contract(o + t' d) / dt'|| dt' is tabulated at K candidate parameters (K/2 linear over
the ray's chord of the unit cube, K/2 geometric from ``T_MIN`` to t_far, merged and sorted) by summing
chord lengths between consecutive contracted candidates, and samples s_bi = (i + u_bi) step are mapped
back with the piecewise-linear inverse of L (exact inside the unit cube, where contract is the identity).
Far away L ~ 2 - 1/t: uniform in disparity.
"""

from __future__ import annotations

from typing import Callable

import torch

from ovs3d.scene.rayspace import RaySpace

CANDIDATES = 256
T_MIN = 1e-2


def box_intersect(origins: torch.Tensor, dirs: torch.Tensor, box: torch.Tensor,
                  eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab test of rays o + t d against box [2, 3] -> (t_near, t_far), each [B], with t_near >= 0.

    A ray that misses the box (or only touches it) has t_far <= t_near.
    """
    safe = torch.where(dirs.abs() < eps, torch.full_like(dirs, eps), dirs)
    t0 = (box[0] - origins) / safe
    t1 = (box[1] - origins) / safe
    t_near = torch.minimum(t0, t1).amax(-1).clamp(min=0)
    t_far = torch.maximum(t0, t1).amin(-1)
    return t_near, t_far


def stratified_samples(origins: torch.Tensor, dirs: torch.Tensor, box: torch.Tensor, step: float,
                       generator: torch.Generator | None = None, max_samples: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stratified samples of rays [B, 3] inside ``box`` at world spacing ``step``.

    Args:
        origins, dirs: [B, 3] rays (dirs need not be unit).
        box: [2, 3] world box.
        step: world distance between consecutive samples.
        generator: jitter source; None gives the deterministic midpoints (evaluation).
        max_samples: cap on samples per ray (defaults to ceil(box diagonal / step)).
    Returns:
        t [B, S] sample parameters, valid [B, S] bool (sample inside the ray's chord), the per-ray
        parameter step dt [B] = step / ||d|| and the exit parameter t_far [B]. S = the largest sample
        count in the batch.
    """
    t_near, t_far = box_intersect(origins, dirs, box)
    norm = dirs.norm(dim=-1).clamp(min=1e-12)
    dt = step / norm
    counts = torch.ceil(((t_far - t_near) / dt).clamp(min=0))
    cap = max_samples or int(torch.ceil((box[1] - box[0]).norm() / step))
    n = int(min(float(counts.max()) if counts.numel() else 0.0, cap))
    index = torch.arange(n, device=origins.device, dtype=origins.dtype)
    if generator is None:
        offset = torch.full((origins.shape[0], n), 0.5, device=origins.device, dtype=origins.dtype)
    else:
        offset = torch.rand((origins.shape[0], n), generator=generator, device=generator.device,
                            dtype=origins.dtype).to(origins.device)
    t = t_near[:, None] + (index + offset) * dt[:, None]
    valid = t < t_far[:, None]
    return t, valid, dt, t_far


def contracted_samples(origins: torch.Tensor, dirs: torch.Tensor, box: torch.Tensor, step: float,
                       warp: Callable[[torch.Tensor], torch.Tensor], far: float,
                       generator: torch.Generator | None = None, max_samples: int | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples of rays [B, 3] equally spaced by ``step`` in the grid coordinates ``warp`` maps to (module
    docstring). ``box`` [2, 3] is in grid coordinates: samples warped outside it are invalid.

    Returns t [B, S], valid [B, S], the mean parameter step dt [B] and t_far [B] (as ``stratified_samples``).
    """
    n_rays = origins.shape[0]
    far_cube = torch.tensor([[-far] * 3, [far] * 3], dtype=origins.dtype, device=origins.device)
    _, t_far = box_intersect(origins, dirs, far_cube)
    unit = torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=origins.dtype, device=origins.device)
    unit_near, unit_far = box_intersect(origins, dirs, unit)
    unit_far = torch.maximum(unit_far, unit_near)
    half = CANDIDATES // 2
    fraction = torch.linspace(0, 1, half, dtype=origins.dtype, device=origins.device)
    linear = unit_near[:, None] + fraction * (unit_far - unit_near)[:, None]
    ratio = (t_far / T_MIN).clamp_min(1.0)
    geometric = T_MIN * ratio[:, None] ** fraction
    candidates = torch.cat([torch.zeros_like(t_far)[:, None], linear, geometric], 1).clamp(max=t_far[:, None])
    candidates = candidates.sort(1).values                                         # [B, K+1]
    points = warp(origins[:, None] + candidates[..., None] * dirs[:, None])         # [B, K+1, 3]
    arc = torch.cat([torch.zeros_like(t_far)[:, None], (points[:, 1:] - points[:, :-1]).norm(dim=-1).cumsum(1)], 1)
    length = arc[:, -1]
    cap = max_samples or int(torch.ceil((box[1] - box[0]).norm() / step))
    n = int(min(float(torch.ceil(length.max() / step)) if n_rays else 0.0, cap))
    index = torch.arange(n, device=origins.device, dtype=origins.dtype)
    if generator is None:
        offset = torch.full((n_rays, n), 0.5, device=origins.device, dtype=origins.dtype)
    else:
        offset = torch.rand((n_rays, n), generator=generator, device=generator.device,
                            dtype=origins.dtype).to(origins.device)
    s = (index + offset) * step                                                    # [B, S] arc positions
    right = torch.searchsorted(arc.contiguous(), s.contiguous()).clamp(1, arc.shape[1] - 1)
    a0, a1 = arc.gather(1, right - 1), arc.gather(1, right)
    c0, c1 = candidates.gather(1, right - 1), candidates.gather(1, right)
    t = c0 + (s - a0) / (a1 - a0).clamp_min(1e-12) * (c1 - c0)
    grid = warp(origins[:, None] + t[..., None] * dirs[:, None])
    valid = (s < length[:, None]) & ((grid >= box[0]) & (grid <= box[1])).all(-1)
    dt = t_far / torch.ceil(length / step).clamp_min(1)
    return t, valid, dt, t_far


def ray_samples(space: RaySpace, origins: torch.Tensor, dirs: torch.Tensor, box: torch.Tensor, step: float,
                generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The samples of a ray space (``scene/rayspace.py``): box-clipped for bounded spaces, equally spaced
    in grid coordinates for unbounded ones (the contracted space)."""
    if space.unbounded:
        return contracted_samples(origins, dirs, box, step, space.warp, space.far, generator)
    return stratified_samples(origins, dirs, box, step, generator)
