"""``ovs3d test``: segmentation images, videos and metrics of a stage-2 run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Config:
    """Label every pixel (argmax over the class list of the cosine, or of the per-view min-max relevancy),
    write overlays, a spiral video and results.txt / metrics.json with both evaluation protocols (method
    spec section 7) and both label rules."""

    run: Path
    """Stage-2 run folder (from `ovs3d segment`)."""
    out: Path | None = None
    """Output folder (default: <run>/test)."""
    scene: Path | None = None
    """Scene folder (default: the run's)."""
    video_frames: int = 120
    """Frames of the spiral segmentation video (0: no video)."""
    video_downsample: float = 1.0
    """The video is rendered at the test resolution divided by this."""
    labels: Literal["cosine", "relevancy"] = "cosine"
    """Label rule of the overlays, the video and the main metrics: cosine = argmax cos(F, t_c) (the
    paper's); relevancy = argmax of cos(F, t_c) min-max normalised per class over the view. Both are
    scored either way."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def main(config: Config) -> None:
    from ovs3d.eval.segment_eval import run_test

    result = run_test(config.run, config.out, config.scene, config.video_frames, device=config.device,
                      labels=config.labels, video_downsample=config.video_downsample)
    print((result.out / "results.txt").read_text(), end="")
    print(f"wrote {result.out}")
