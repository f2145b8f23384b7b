"""``ovs3d render``: images and videos of a run along the dataset cameras or the spiral path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.eval.render_run import render_run


@dataclass
class Config:
    """Render RGB and depth of a reconstructed scene (a stage-1 or stage-2 run folder)."""

    run: Path
    """Run folder of `ovs3d reconstruct` or `ovs3d segment` (holds checkpoint.safetensors)."""
    path: Literal["dataset", "spiral"] = "spiral"
    """dataset: every scene image's camera (PNG per view); spiral: the 120-frame LLFF spiral (video + PNGs)."""
    out: Path | None = None
    """Output folder (default: <run>/renders/<path>)."""
    downsample: float = 1.0
    """Render at the run's resolution divided by this."""
    frames: int = 120
    """Frames of the spiral path."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    out = render_run(config.run, config.path, config.out, config.downsample, config.frames, config.runtime.apply())
    print(f"ovs3d render: wrote {out}")
