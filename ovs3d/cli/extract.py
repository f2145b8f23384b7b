"""``ovs3d extract``: CLIP patch hierarchy and DINO maps of a scene into its feature cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.features.extract import ExtractConfig, extract_features


@dataclass
class Config:
    """Extract the CLIP patch hierarchy and the DINO maps of a scene into <scene>/features/ (float16,
    pixel-major, read per training batch; resumes after an interruption; a cache made with other settings
    is never reused)."""

    data: Path
    """Scene folder (with images/)."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Encoders and the CLIP hierarchy (--extract.clip.kind, --extract.clip.weights, --extract.dino.*)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    extract_features(config.data, config.extract, device=config.runtime.apply())
