"""Whole images from a field: rays of a camera (NDC for forward-facing scenes), chunked rendering, depth
display, and ``render_run`` which renders a stage-1 run along the dataset cameras or the spiral path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ovs3d.render.volume import render_rays
from ovs3d.scene.cameras import Cameras, ndc_rays


def scene_rays(cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
               kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays [B, 3] through image points (u, v) of cameras ``view`` [B]; NDC (focal fx of camera 0, as the
    authors) for forward-facing scenes."""
    origins, dirs = cameras.rays(view, u, v)
    if kind == "forward":
        origins, dirs = ndc_rays(origins, dirs, cameras.fx[0], cameras.width, cameras.height)
    return origins, dirs


@torch.no_grad()
def render_image(field, cameras: Cameras, view: int, kind: str, step: float,
                 chunk: int = 16384) -> dict[str, torch.Tensor]:
    """Render every pixel of ``cameras[view]`` in chunks of rays (black background, midpoint samples).

    Returns {"rgb": [H, W, 3], "depth": [H, W], "acc": [H, W]}.
    """
    u, v = cameras.pixel_grid()
    u, v = u.reshape(-1), v.reshape(-1)
    idx = torch.full_like(u, view, dtype=torch.long)
    parts: dict[str, list[torch.Tensor]] = {"rgb": [], "depth": [], "acc": []}
    for s in range(0, u.numel(), chunk):
        o, d = scene_rays(cameras, idx[s:s + chunk], u[s:s + chunk], v[s:s + chunk], kind)
        out = render_rays(field, o, d, step)
        for key in parts:
            parts[key].append(out[key])
    h, w = cameras.height, cameras.width
    return {"rgb": torch.cat(parts["rgb"]).view(h, w, 3), "depth": torch.cat(parts["depth"]).view(h, w),
            "acc": torch.cat(parts["acc"]).view(h, w)}


def depth_to_gray(depth: torch.Tensor) -> np.ndarray:
    """Depth [H, W] -> [H, W] in [0, 1] for viewing: near = bright, stretched to the 1st-99th percentile."""
    d = depth.float().cpu()
    lo, hi = torch.quantile(d.flatten()[:1_000_000], torch.tensor([0.01, 0.99]))
    return (1 - ((d - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)).numpy()


def render_run(run: str | Path, path: str = "spiral", out: str | Path | None = None, downsample: float = 1.0,
               frames: int = 120, device: str = "auto") -> Path:
    """Render RGB and depth of a stage-1 run into ``out`` (default <run>/renders/<path>).

    ``dataset``: one ``<index>_rgb.png`` / ``<index>_depth.png`` per scene image. ``spiral``: PNGs per frame
    plus ``rgb.mp4`` and ``depth.mp4`` (GIF without ffmpeg). Returns the output folder.
    """
    from ovs3d.device import resolve_device
    from ovs3d.io.images import to_uint8, write_png
    from ovs3d.io.video import write_video
    from ovs3d.scene.paths import spiral_path
    from ovs3d.scene.load import load_scene
    from ovs3d.train.checkpoint import load_field

    run = Path(run)
    dev = resolve_device(device)
    field, meta = load_field(run, dev)
    scene = load_scene(meta["scene"], downsample=meta["config"]["downsample"], load_annotations=False)
    cameras = scene.cameras if path == "dataset" else spiral_path(scene.cameras, scene.bounds, frames)
    cameras = cameras.resized(max(int(scene.width / downsample), 8), max(int(scene.height / downsample), 8)).to(dev)
    out = Path(out) if out is not None else run / "renders" / path
    rgb_frames, depth_frames = [], []
    for i in range(len(cameras)):
        image = render_image(field, cameras, i, meta["kind"], meta["step"], meta["config"]["render_chunk"])
        rgb, depth = to_uint8(image["rgb"].cpu().numpy()), to_uint8(depth_to_gray(image["depth"]))
        write_png(out / f"{i:03d}_rgb.png", rgb)
        write_png(out / f"{i:03d}_depth.png", depth)
        rgb_frames.append(rgb)
        depth_frames.append(np.repeat(depth[..., None], 3, axis=2))
    if path == "spiral":
        write_video(out / "rgb.mp4", rgb_frames)
        write_video(out / "depth.mp4", depth_frames)
    return out
