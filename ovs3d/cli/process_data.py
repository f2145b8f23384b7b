"""``ovs3d process-data``: photos or a video -> a posed scene folder (pycolmap structure from motion)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ovs3d.scene.process_data import ProcessOptions, process_data


@dataclass
class Config:
    """Pose a folder of photos (or a video) with pycolmap on the CPU and write a scene folder: images/,
    sparse/0, poses_bounds.npy (LLFF) and transforms.json (nerfstudio)."""

    out: Path
    """The scene folder to write (built in a temporary folder, renamed into place when complete)."""
    images: Path | None = None
    """Folder of photos (jpg/png/...), all of one shape."""
    video: Path | None = None
    """A video file to take frames from instead of --images."""
    fps: float = 2.0
    """With --video: frames extracted per second of video."""
    sfm: Annotated[ProcessOptions, tyro.conf.OmitArgPrefixes] = field(default_factory=ProcessOptions)
    """Structure-from-motion settings (--matching, --mapper, --max-size, ...)."""


def main(config: Config) -> None:
    process_data(config.out, images=config.images, video=config.video, fps=config.fps, options=config.sfm)
