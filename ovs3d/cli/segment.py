"""``ovs3d segment``: stage 2, distil CLIP and DINO into a semantic field on a stage-1 run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.features.extract import ExtractConfig
from ovs3d.pipeline import segment_stage
from ovs3d.scene.annotations import read_classes
from ovs3d.train.configs import PresetName, SegmentConfig, preset
from ovs3d.train.legacy_config import read_legacy_config


@dataclass
class Config:
    """Train the semantic field (feature head + selection volume) on a stage-1 run (method spec section 6).
    Features are extracted first when the scene's cache lacks them. `--preset` sets every stage-2 value,
    `--legacy-config` (an authors' configs/<scene>.txt) applies over it, and any `--segment.*` flag
    overrides both (`--preset cpu --segment.lr-network 1e-3 --segment.relevancy-weight 0.5`)."""

    run: Path
    """Stage-1 run folder (holds checkpoint.safetensors from `ovs3d reconstruct`)."""
    out: Path
    """Stage-2 run folder to create (or continue with --resume)."""
    data: Path | None = None
    """Scene folder (default: the one the stage-1 run was trained on)."""
    classes_file: Path | None = None
    """Class prompts, one per line (default: <scene>/segmentations/classes.txt)."""
    preset: PresetName = "cpu"
    """paper (the authors' values, GPU), default (our settings, GPU), cpu (2 cores), test (seconds)."""
    legacy_config: Path | None = None
    """An authors' configs/<scene>.txt (key = value) applied over the preset; unknown keys are warned about."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    segment: SegmentConfig = field(default_factory=lambda: preset("segment", "cpu"))
    """Stage-2 settings (the preset's values, then the legacy config's)."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Encoders and feature cache (extracted first when missing)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def defaults(name: str, legacy_config: str | None = None, **_options: str) -> Config:
    settings = preset("segment", name)
    if legacy_config is not None:
        settings = read_legacy_config(legacy_config, settings)
    return Config(run=tyro.MISSING, out=tyro.MISSING, preset=name, segment=settings,
                  legacy_config=Path(legacy_config) if legacy_config else None)


def main(config: Config) -> None:
    classes = read_classes(config.classes_file) if config.classes_file is not None else None
    summary = segment_stage(config.run, config.out, config.segment, config.extract, config.data, classes,
                            config.resume, config.runtime.apply())
    if summary.get("mode") == "instant":
        lifted = summary["lift"]
        print(f"stage 2 (instant): lifted {lifted['rays']} rays onto {lifted['nodes']} nodes of a "
              f"{'x'.join(map(str, lifted['grid']))} grid in {lifted['seconds']:.1f} s, encoders {summary['encoders']}; "
              f"run in {config.out}")
        return
    print(f"stage 2: {summary['iteration']} iterations, {summary['s_per_iter']:.3f} s/iteration, "
          f"encoders {summary['encoders']}; run in {config.out}")
