"""``ovs3d demo``: the embedded default (synthetic scene -> full pipeline, cpu preset)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Config:
    """Make the embedded synthetic scene and run the whole pipeline on it with the cpu preset. Uses CLIP
    and DINO when their weights are available (cached, given by path, or downloadable), otherwise the
    built-in weight-free encoders, and says which."""

    out: Path = Path("ovs3d-demo")
    """Folder for the scene (<out>/scene) and the outputs (<out>/outputs)."""
    seed: int = 0
    """Seed of the synthetic scene."""
    clip_weights: Path | None = None
    """Local CLIP ViT-B/16 weights file (else the hub cache or a download is tried)."""
    dino_weights: Path | None = None
    """Local DINO ViT-B/8 weights file (else the hub cache or a download is tried)."""
    builtin: bool = False
    """Use the built-in weight-free encoders without trying CLIP and DINO."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def main(config: Config) -> None:
    from ovs3d.demo import run_demo

    run_demo(config.out, seed=config.seed, clip_weights=config.clip_weights, dino_weights=config.dino_weights,
             force_builtin=config.builtin, device=config.device)
