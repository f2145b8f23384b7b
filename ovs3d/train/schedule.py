"""Stage-1 schedule arithmetic (method spec section 3.3): grid sizes, sample counts, learning-rate decay.

    voxel size      v = (box volume / n_voxels)^(1/3);  reso = floor(extent / v) per axis   (N_to_reso)
    upsample counts exp(linspace(log n_init, log n_final, K + 1))[1:], rounded       (log-spaced)
    samples per ray N = min(cap, int(||reso|| / step_ratio)) over the box diagonal;
    marching step   = ||box extent|| / N  (world units; TensoRF's nominal step)
    lr decay        gamma = target_ratio^(1 / decay_iters) per iteration
"""

from __future__ import annotations

import math

import torch


def n_to_reso(n_voxels: int, box: torch.Tensor) -> tuple[int, int, int]:
    """Grid nodes per axis giving about ``n_voxels`` cubic voxels over ``box`` [2, 3]."""
    extent = (box[1] - box[0]).double()
    voxel = float((extent.prod() / n_voxels) ** (1.0 / 3.0))
    return tuple(int(e / voxel) for e in extent.tolist())


def upsample_voxel_counts(n_init: int, n_final: int, n_steps: int) -> list[int]:
    """Voxel counts after each of ``n_steps`` upsamplings, log-spaced from n_init to n_final."""
    if n_steps <= 0:
        return []
    logs = torch.linspace(math.log(n_init), math.log(n_final), n_steps + 1, dtype=torch.float64)
    return [int(round(math.exp(float(x)))) for x in logs[1:]]


def samples_per_ray(reso: tuple[int, int, int], step_ratio: float, cap: int = 1_000_000) -> int:
    """N = min(cap, int(||reso||_2 / step_ratio)): samples spanning the box diagonal."""
    return min(cap, int(math.sqrt(sum(r * r for r in reso)) / step_ratio))


def marching_step(box: torch.Tensor, n_samples: int) -> float:
    """World step = box diagonal / N."""
    return float((box[1] - box[0]).norm()) / n_samples


def decay_gamma(target_ratio: float, decay_iters: int) -> float:
    """Per-iteration lr factor so that the lr reaches ``target_ratio`` x after ``decay_iters`` iterations."""
    return target_ratio ** (1.0 / max(decay_iters, 1))
