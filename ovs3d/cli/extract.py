"""``ovs3d extract``: CLIP patch hierarchy and DINO maps of a scene into its feature cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ovs3d.features.extract import ExtractConfig, extract_features


@dataclass
class Config:
    """Extract the CLIP patch hierarchy and the DINO maps of a scene into <scene>/features/ (float16,
    pixel-major, read per training batch; resumes after an interruption; a cache made with other settings
    is never reused)."""

    data: Path
    """Scene folder (with images/)."""
    extract: Annotated[ExtractConfig, tyro.conf.arg(name="")] = field(default_factory=ExtractConfig)


def main(config: Config) -> None:
    extract_features(config.data, config.extract)
