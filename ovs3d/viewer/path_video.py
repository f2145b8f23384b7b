"""The viewer's "render path video" button: the current mode (labels, a query's relevancy, rgb, ...) along
the scene's spiral path, to an mp4 (``io/video.py``) in the viewer's output folder."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

from ovs3d.io.lock import folder_lock
from ovs3d.io.video import write_video
from ovs3d.scene.paths import video_path
from ovs3d.viewer.camera import dataset_view
from ovs3d.viewer.frames import Colorizer, Settings, ViewRenderer


def video_name(settings: Settings) -> str:
    """``<mode>_path.mp4``, with the shown query in the name in relevancy mode."""
    stem = settings.mode
    if settings.mode == "relevancy" and settings.queries:
        text = settings.queries[min(settings.shown, len(settings.queries) - 1)]
        readable = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:40] or "query"
        stem += f"_{readable}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"
    return f"{stem}_path.mp4"


def render_path_video(renderer: ViewRenderer, settings: Settings, out: Path, frames: int, height: int,
                      progress: Callable[[int, int], None] | None = None) -> Path:
    """Render ``frames`` frames of the scene's path ``height`` pixels high in ``settings``' mode; returns the
    video written (``out/<mode>_path.mp4``, or .gif where ffmpeg is missing)."""
    scene = renderer.scene
    path = video_path(scene.cameras, scene.bounds, scene.kind, frames)
    colorizer = Colorizer(renderer)
    outputs = renderer.outputs(settings.mode)
    images = []
    with folder_lock(out, "ovs3d view"):
        for i in range(len(path)):
            frame = renderer.render(dataset_view(path, i), height, outputs)
            images.append(colorizer.image(frame, settings))
            if progress is not None:
                progress(i + 1, len(path))
        return write_video(Path(out) / video_name(settings), images, fps=15)
