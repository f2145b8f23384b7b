"""``ovs3d test``: segmentation images, videos and metrics of a stage-2 run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Config:
    """Label every pixel (argmax of cosine over the class list), write overlays, a spiral video and
    results.txt / metrics.json with both evaluation protocols (method spec section 7)."""

    run: Path
    """Stage-2 run folder (from `ovs3d segment`)."""
    out: Path | None = None
    """Output folder (default: <run>/test)."""
    scene: Path | None = None
    """Scene folder (default: the run's)."""
    video_frames: int = 120
    """Frames of the spiral segmentation video (0: no video)."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def main(config: Config) -> None:
    from ovs3d.eval.segment_eval import run_test

    result = run_test(config.run, config.out, config.scene, config.video_frames, device=config.device)
    print((result.out / "results.txt").read_text(), end="")
    print(f"wrote {result.out}")
