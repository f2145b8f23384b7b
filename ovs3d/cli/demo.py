"""``ovs3d demo``: the embedded default (synthetic scene -> full pipeline, cpu preset)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.cli.common import RuntimeFlags
from ovs3d.demo import run_demo
from ovs3d.device import Runtime
from ovs3d.features.extract import ExtractConfig


@dataclass
class Config:
    """Make the embedded synthetic scene and run the whole pipeline on it with the cpu preset scaled to it.
    Uses CLIP and DINO when their weights are available (cached, given by path with --extract.clip.weights /
    --extract.dino.weights, or downloadable), otherwise the built-in weight-free encoders, and says which."""

    out: Path = Path("ovs3d-demo")
    """Folder for the scene (<out>/scene) and the outputs (<out>/outputs)."""
    seed: int = 0
    """Seed of the synthetic scene."""
    builtin: bool = False
    """Use the built-in weight-free encoders without trying CLIP and DINO."""
    instant: bool = False
    """Also lift stage 2 without training (seconds) on the same stage 1 and print both results."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Encoders to try first (--extract.clip.weights FILE, --extract.dino.weights FILE)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    run_demo(config.out, seed=config.seed, extract=config.extract, force_builtin=config.builtin,
             device=config.runtime.apply(), instant=config.instant)
