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
"""

from __future__ import annotations

import torch


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
