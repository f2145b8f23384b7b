"""``ovs3d run``: every stage in order into one folder, skipping completed stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.pipeline import PipelineConfig


@dataclass
class Config:
    """Extract features, reconstruct, segment and test a scene, in order, into one output folder. A stage
    whose outputs are complete with the same settings is skipped; an interrupted run resumes."""

    data: Path
    """Scene folder (images/ + poses_bounds.npy, transforms.json or sparse/0)."""
    out: Path | None = None
    """Output folder (default: outputs/<scene name>)."""
    classes_file: Path | None = None
    """Class prompts, one per line (default: <scene>/segmentations/classes.txt)."""
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    """Preset, encoders, device."""


def main(config: Config) -> None:
    from ovs3d.pipeline import run_pipeline, summary_table
    from ovs3d.scene.annotations import read_classes

    classes = read_classes(config.classes_file) if config.classes_file else None
    out = config.out or Path("outputs") / config.data.resolve().name
    rows = run_pipeline(config.data, out, config.pipeline, classes)
    print(summary_table(rows))
