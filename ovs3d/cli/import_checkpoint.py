"""``ovs3d import-checkpoint``: the authors' 3D-OVS checkpoints as ovs3d runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.features.encoders import ClipConfig
from ovs3d.runs.import_authors import ImportSettings, import_checkpoint
from ovs3d.scene.annotations import read_classes


@dataclass
class TextEncoder:
    """The CLIP-slot encoder that embeds the class prompts of a stage-2 checkpoint; it must be the one the
    checkpoint was trained with (the same --extract.clip.* flags as extract, segment and run)."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    """The image-text encoder (CLIP slot)."""


@dataclass
class Config:
    """Convert an authors' 3D-OVS checkpoint (train.py stage 1 or train_seg.py stage 2 .th file) into an ovs3d
    run folder that render, test, query and segment read like any other. The file is read as data only
    (tensors, numpy arrays and plain containers; anything else is refused). Their mirrored pose recentring is
    undone so the field lines up with ovs3d's cameras of the same scene."""

    checkpoint: Path
    """The authors' .th file (log/<scene>/<scene>.th or log_seg/<scene>/<scene>.th)."""
    data: Path
    """The scene folder the checkpoint was trained on (LLFF: poses_bounds.npy + images/)."""
    out: Path
    """Run folder to create."""
    downsample: float | None = None
    """The authors' ray_downsample_train: the pose file's resolution divided by this (default 2 for a stage-1
    checkpoint, 8 for stage 2, as in their configs)."""
    classes_file: Path | None = None
    """Class prompts of a stage-2 checkpoint, one per line (default: <scene>/segmentations/classes.txt)."""
    extract: TextEncoder = field(default_factory=TextEncoder)
    """The encoder of the class prompts (--extract.clip.kind, --extract.clip.weights)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    classes = read_classes(config.classes_file) if config.classes_file is not None else []
    settings = ImportSettings(checkpoint=config.checkpoint, scene=config.data, downsample=config.downsample,
                              classes=classes, clip=config.extract.clip)
    record = import_checkpoint(settings, config.out, config.runtime.apply())
    print(f"ovs3d import-checkpoint: {record.stage} run in {config.out}")
