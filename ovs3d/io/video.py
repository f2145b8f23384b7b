"""Videos from frame lists: MP4 (H.264 via imageio-ffmpeg) or, when ffmpeg is unavailable, an animated GIF.

Files are written beside the target under a temporary name and renamed, so a kill never leaves a
half-written video under the final name.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad [H, W, 3] uint8 by edge replication to even H and W (H.264 with yuv420p needs them)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: list[np.ndarray], fps: int = 30) -> Path:
    """Write uint8 frames [H, W, 3] to ``path`` (.mp4); falls back to ``path`` with .gif if ffmpeg fails.

    Returns the path actually written.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = path.with_name(f".{path.stem}.tmp.mp4")
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                macro_block_size=2, pixelformat="yuv420p") as writer:
            for frame in frames:
                writer.append_data(_even(frame))
        os.replace(tmp, path)
        return path
    except (ImportError, RuntimeError, OSError, ValueError):
        gif = path.with_suffix(".gif")
        tmp = gif.with_name(f".{gif.stem}.tmp.gif")
        imageio.mimsave(tmp, frames, format="GIF", duration=1000 / fps, loop=0)
        os.replace(tmp, gif)
        return gif
