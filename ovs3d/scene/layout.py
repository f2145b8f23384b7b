"""Scene type from the camera layout: forward-facing (all cameras look the same way) or 360-degree."""

from __future__ import annotations

import torch

FORWARD_MIN_COSINE = 0.5


def detect_kind(c2w: torch.Tensor) -> str:
    """``forward`` when every camera's viewing direction (-z axis) is within 60 degrees of the mean
    viewing direction, else ``360``. c2w: [N, 3, 4] in ovs3d's convention."""
    view_dirs = -c2w[:, :, 2]
    view_dirs = view_dirs / view_dirs.norm(dim=-1, keepdim=True)
    mean = view_dirs.mean(0)
    mean = mean / mean.norm().clamp_min(1e-8)
    return "forward" if float((view_dirs @ mean).min()) > FORWARD_MIN_COSINE else "360"
