"""``ovs3d segment``: stage 2, distil CLIP and DINO into a semantic field on a stage-1 run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ovs3d.features.extract import ExtractConfig


@dataclass
class Config:
    """Train the semantic field (feature head + selection volume) on a stage-1 run (method spec section 6)."""

    stage1: Path
    """Stage-1 run folder (holds checkpoint.safetensors from `ovs3d reconstruct`)."""
    out: Path
    """Stage-2 run folder to create (or continue with --resume)."""
    scene: Path | None = None
    """Scene folder (default: the one the stage-1 run was trained on)."""
    classes: Path | None = None
    """Class list, one prompt per line (default: the scene's segmentations/classes.txt)."""
    preset: Literal["paper", "cpu", "test"] = "cpu"
    """paper: the authors' values (GPU); cpu: scaled for a 2-core CPU (lr 5e-3); test: tiny."""
    legacy_config: Path | None = None
    """An authors' configs/<scene>.txt (key = value) applied over the preset; unknown keys are warned about."""
    mode: Literal["faithful", "improved"] | None = None
    """Override the semantic field mode (default: the preset's, improved for cpu, faithful for paper and test)."""
    iterations: int | None = None
    """Override the number of iterations."""
    joint_start_iter: int | None = None
    """Override the iteration at which appearance is unfrozen and the RGB loss starts."""
    resume: bool = False
    """Continue the run in --out from its last checkpoint."""
    features: ExtractConfig = field(default_factory=ExtractConfig)
    """Encoders and feature cache (extracted first when missing)."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def main(config: Config) -> None:
    from ovs3d.scene.annotations import read_classes
    from ovs3d.train.segment import preset, read_legacy_config, segment

    cfg = preset(config.preset)
    if config.legacy_config is not None:
        cfg = read_legacy_config(config.legacy_config, cfg)
    overrides = {k: v for k, v in (("mode", config.mode), ("iterations", config.iterations),
                                   ("joint_start_iter", config.joint_start_iter)) if v is not None}
    cfg = dataclasses.replace(cfg, **overrides)
    classes = read_classes(config.classes) if config.classes is not None else None
    summary = segment(config.stage1, config.out, cfg, config.features, config.scene, classes, config.resume,
                      config.device)
    print(f"stage 2: {summary['iteration']} iterations, {summary['s_per_iter']:.3f} s/iteration, "
          f"encoders {summary['encoders']}; run in {config.out}")
