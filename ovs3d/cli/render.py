"""``ovs3d render``: images and videos of a run along the dataset cameras, the spiral or the orbit path."""

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
    path: Literal["dataset", "video", "spiral", "orbit"] = "video"
    """dataset: every scene image's camera (PNG per view); video: the scene's path (the LLFF spiral for
    forward-facing scenes, the orbit for 360 ones); spiral / orbit: that path (video + PNGs)."""
    out: Path | None = None
    """Output folder (default: <run>/renders/<path>)."""
    downsample: float = 1.0
    """Render at the run's resolution divided by this."""
    frames: int = 120
    """Frames of the video path."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    out = render_run(config.run, config.path, config.out, config.downsample, config.frames, config.runtime.apply())
    print(f"ovs3d render: wrote {out}")
