"""``ovs3d render``: images and videos of a stage-1 run along the dataset cameras or the spiral path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Config:
    """Render RGB and depth of a reconstructed scene (a stage-1 run folder)."""

    run: Path
    """Run folder of `ovs3d reconstruct` (holds checkpoint.safetensors)."""
    path: Literal["dataset", "spiral"] = "spiral"
    """dataset: every scene image's camera (PNG per view); spiral: the 120-frame LLFF spiral (video + PNGs)."""
    out: Path | None = None
    """Output folder (default: <run>/renders/<path>)."""
    downsample: float = 1.0
    """Render at the run's resolution divided by this."""
    frames: int = 120
    """Frames of the spiral path."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def main(config: Config) -> None:
    from ovs3d.render.images import render_run

    out = render_run(config.run, config.path, config.out, config.downsample, config.frames, config.device)
    print(f"ovs3d render: wrote {out}")
