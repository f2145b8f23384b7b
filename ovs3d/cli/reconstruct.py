"""``ovs3d reconstruct``: stage 1, fit a TensoRF to a scene's photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import tyro

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.train.configs import PresetName, ReconstructConfig, preset
from ovs3d.train.reconstruct import reconstruct


@dataclass
class Config:
    """Reconstruct a scene (stage 1): train a TensoRF radiance field, evaluate PSNR/SSIM and render a spiral
    video. `--preset` sets every stage-1 value; any `--reconstruct.*` flag overrides one
    (`--preset cpu --reconstruct.n-iters 2000`)."""

    data: Path
    """Scene folder (images/ + poses_bounds.npy, transforms.json or sparse/0)."""
    out: Path
    """Run folder (config.yml, checkpoint, metrics.json, renders/, tb/)."""
    preset: PresetName = "cpu"
    """paper (the published schedule, GPU), default (our settings, GPU), cpu (2 cores, minutes), test (seconds)."""
    resume: bool = False
    """Continue from the checkpoint in --out (after an interruption)."""
    reconstruct: ReconstructConfig = field(default_factory=lambda: preset("reconstruct", "cpu"))
    """Stage-1 settings (the preset's values)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def defaults(name: str, **_options: str) -> Config:
    return Config(data=tyro.MISSING, out=tyro.MISSING, preset=name, reconstruct=preset("reconstruct", name))


def main(config: Config) -> None:
    metrics = reconstruct(config.data, config.out, config.reconstruct, resume=config.resume,
                          device=config.runtime.apply())
    line = f"ovs3d reconstruct: {metrics['iterations']} iterations in {metrics['train_seconds']:.0f} s"
    if "psnr" in metrics:
        line += f"; {metrics['split']} PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}"
    print(line + f"; run folder {config.out}")
