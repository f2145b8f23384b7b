"""A degraded 2D teacher made from ground-truth masks, to measure what 3D lifting adds on real imagery.

Stands in for CLIP when no weights are available. For each view and each CLIP scale s (patch size p_s,
the short side / 5, / 7, / 10 as in the hierarchy), the class-membership maps are box-blurred twice
with a p_s x p_s window (a crop's embedding mixes the classes by area, and each pixel averages the
crops covering it), giving soft maps m_{s,c}(x) in [0, 1]. On the views in ``corrupted_views`` a
random rectangle covering ``corrupt_fraction`` of the image has its class maps rolled (class c takes
class c+1's map): view-dependent errors like CLIP's hallucinations. The teacher feature is
f_s(x) = sum_c m_{s,c}(x) e_c + noise, with e_c the c-th basis vector of R^D, and the text embedding
of class c is e_c, so cosine relevancy recovers m_{s,c} up to the noise.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SCALE_DIVISORS = (5, 7, 10)


def box_blur(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Mean filter of odd-ified ``size`` with replicate padding. maps: [C, H, W] -> [C, H, W]."""
    size = max(1, size | 1)
    pad = size // 2
    padded = F.pad(maps[None], (pad, pad, pad, pad), mode="replicate")
    return F.avg_pool2d(padded, size, stride=1)[0]


def degraded_teacher(labels: np.ndarray, corrupted_views: list[int], embedding_dim: int = 16,
                     corrupt_fraction: float = 0.12, noise: float = 0.05, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Teacher features and text embeddings from GT labels.

    Args:
        labels: [V, H, W, C] uint8 in {0, 1} (masks that partition the image).
        corrupted_views: positions (0..V-1) of the views that get a view-dependent error.
    Returns:
        features [V, 3, D, H, W] float16 (not normalised) and text embeddings [C, D] float32.
    """
    rng = np.random.default_rng(seed)
    n_views, height, width, n_classes = labels.shape
    if embedding_dim < n_classes:
        raise ValueError("embedding_dim must be at least the number of classes")
    short = min(height, width)
    out = np.empty((n_views, len(SCALE_DIVISORS), embedding_dim, height, width), dtype=np.float16)
    for v in range(n_views):
        maps = torch.from_numpy(labels[v].astype(np.float32)).permute(2, 0, 1)
        if v in corrupted_views:
            rh, rw = int(height * np.sqrt(corrupt_fraction)), int(width * np.sqrt(corrupt_fraction))
            y0, x0 = rng.integers(0, height - rh), rng.integers(0, width - rw)
            maps[:, y0:y0 + rh, x0:x0 + rw] = torch.roll(maps[:, y0:y0 + rh, x0:x0 + rw], 1, dims=0)
        for s, divisor in enumerate(SCALE_DIVISORS):
            patch = short // divisor
            soft = box_blur(box_blur(maps, patch), patch).numpy()
            feat = rng.normal(0.0, noise, size=(embedding_dim, height, width)).astype(np.float32)
            feat[:n_classes] += soft
            out[v, s] = feat.astype(np.float16)
    return out, np.eye(n_classes, embedding_dim, dtype=np.float32)
