"""``ovs3d render``: RGB and depth of any run along the dataset cameras or a video path (spiral, orbit), as PNGs and videos."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ovs3d.io.images import to_uint8, write_png
from ovs3d.io.lock import folder_lock
from ovs3d.io.video import write_video
from ovs3d.render.camera import depth_to_gray, radiance_field, render_camera
from ovs3d.runs.load import load_run
from ovs3d.scene.load import load_scene
from ovs3d.scene.paths import PathName, video_path


def render_run(run: str | Path, path: Literal["dataset"] | PathName = "video", out: str | Path | None = None,
               downsample: float = 1.0, frames: int = 120, device: torch.device | str = "cpu",
               chunk: int = 4096) -> Path:
    """Render RGB and depth of a run (stage 1 or 2) into ``out`` (default <run>/renders/<path>).

    ``dataset``: one ``<index>_rgb.png`` / ``<index>_depth.png`` per scene image. A path (``scene/paths.py``): PNGs per frame
    plus ``rgb.mp4`` and ``depth.mp4`` (GIF without ffmpeg). Images are rendered at the run's resolution
    divided by ``downsample``. Returns the output folder.
    """
    run = Path(run)
    model, record = load_run(run, device)
    scene = load_scene(record.scene, load_annotations=False)
    cameras = scene.cameras if path == "dataset" else video_path(scene.cameras, scene.bounds, scene.kind, frames, path)
    cameras = cameras.resized(max(int(record.width / downsample), 8), max(int(record.height / downsample), 8))
    cameras = cameras.to(device)
    out = Path(out) if out is not None else run / "renders" / path
    with folder_lock(out, "ovs3d render"), radiance_field(model).frozen():
        rgb_frames, depth_frames = [], []
        for i in range(len(cameras)):
            image = render_camera(model, cameras, i, record.step, ("rgb", "depth"), chunk)
            rgb, depth = to_uint8(image["rgb"].cpu().numpy()), to_uint8(depth_to_gray(image["depth"]))
            write_png(out / f"{i:03d}_rgb.png", rgb)
            write_png(out / f"{i:03d}_depth.png", depth)
            rgb_frames.append(rgb)
            depth_frames.append(np.repeat(depth[..., None], 3, axis=2))
        if path != "dataset":
            write_video(out / "rgb.mp4", rgb_frames)
            write_video(out / "depth.mp4", depth_frames)
        return out
