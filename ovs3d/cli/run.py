"""``ovs3d run``: every stage in order into one folder, skipping completed stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.eval.segment_eval import TestConfig
from ovs3d.features.extract import ExtractConfig
from ovs3d.pipeline import PipelineConfig, run_pipeline, summary_table
from ovs3d.scene.annotations import read_classes
from ovs3d.train.configs import PresetName, ReconstructConfig, SegmentConfig, preset


@dataclass
class Config:
    """Extract features, reconstruct, segment and test a scene, in order, into one output folder. A stage
    whose outputs are complete with the same settings is skipped; an interrupted run resumes. `--preset`
    sets every stage's values; any `--reconstruct.*` / `--segment.*` flag overrides one."""

    data: Path
    """Scene folder (images/ + poses_bounds.npy, transforms.json or sparse/0)."""
    out: Path | None = None
    """Output folder (default: outputs/<scene name>)."""
    classes_file: Path | None = None
    """Class prompts, one per line (default: <scene>/segmentations/classes.txt)."""
    preset: PresetName = "cpu"
    """Preset of every stage: test (seconds), cpu (minutes on 2 cores), default (our settings, GPU), paper."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Feature extraction (--extract.clip.kind, --extract.clip.weights, --extract.dino.*)."""
    reconstruct: ReconstructConfig = field(default_factory=lambda: preset("reconstruct", "cpu"))
    """Stage 1 (the preset's values)."""
    segment: SegmentConfig = field(default_factory=lambda: preset("segment", "cpu"))
    """Stage 2 (the preset's values)."""
    test: TestConfig = field(default_factory=TestConfig)
    """The test stage (video, label rule)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def defaults(name: str, **_options: str) -> Config:
    return Config(data=tyro.MISSING, preset=name, reconstruct=preset("reconstruct", name),
                  segment=preset("segment", name))


def main(config: Config) -> None:
    classes = read_classes(config.classes_file) if config.classes_file else None
    out = config.out or Path("outputs") / config.data.resolve().name
    pipeline = PipelineConfig(preset=config.preset, extract=config.extract, reconstruct=config.reconstruct,
                              segment=config.segment, test=config.test)
    rows = run_pipeline(config.data, out, pipeline, classes, device=config.runtime.apply())
    print(summary_table(rows))
