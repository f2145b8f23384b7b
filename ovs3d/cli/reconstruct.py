"""``ovs3d reconstruct``: stage 1, fit a TensoRF to a scene's photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from ovs3d.train.reconstruct import PRESETS, ReconstructConfig

Preset = tyro.extras.subcommand_type_from_defaults(
    PRESETS, {"paper": "the published schedule (30k iterations, 128^3 -> 640^3 voxels; for a GPU)",
              "cpu": "scaled for a 2-core CPU: a 504x378 scene in minutes",
              "test": "tiny, seconds (the test suite)",
              "authors-small": "the authors' small setting (batch 1024, 64^3 -> 128^3, 600 iterations)"})


@dataclass
class Config:
    """Reconstruct a scene (stage 1): train a TensoRF radiance field, evaluate PSNR/SSIM and render a spiral video.
    Choose a preset (e.g. `preset:cpu`); every preset value can be overridden (`preset:cpu --preset.n-iters 2000`)."""

    scene: Path
    """Scene folder (images/ + poses_bounds.npy)."""
    out: Path
    """Run folder (config.yml, checkpoint, metrics.json, renders/, tb/)."""
    resume: bool = False
    """Continue from the checkpoint in --out (after an interruption)."""
    preset: Preset = field(default_factory=lambda: PRESETS["cpu"])  # type: ignore[valid-type]
    """Schedule and model settings."""


def main(config: Config) -> None:
    from ovs3d.train.reconstruct import reconstruct

    settings: ReconstructConfig = config.preset
    metrics = reconstruct(config.scene, config.out, settings, resume=config.resume)
    line = f"ovs3d reconstruct: {metrics['iterations']} iterations in {metrics['train_seconds']:.0f} s"
    if "psnr" in metrics:
        line += f"; {metrics['split']} PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}"
    print(line + f"; run folder {config.out}")
