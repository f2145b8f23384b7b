"""``ovs3d test``: segmentation images, videos and metrics of a stage-2 run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.eval.segment_eval import TestConfig
from ovs3d.eval.segment_eval import run_test


@dataclass
class Config:
    """Label every pixel (argmax over the class list of the cosine, or of the per-view min-max relevancy),
    write overlays, a spiral video and results.txt / metrics.json with both evaluation protocols (method
    spec section 7) and both label rules."""

    run: Path
    """Stage-2 run folder (from `ovs3d segment`)."""
    out: Path | None = None
    """Output folder (default: <run>/test)."""
    data: Path | None = None
    """Scene folder (default: the run's)."""
    test: TestConfig = field(default_factory=TestConfig)
    """Video and label rule."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    result = run_test(config.run, config.out, config.data, config.test, device=config.runtime.apply())
    print((result.out / "results.txt").read_text(), end="")
    print(f"wrote {result.out}")
