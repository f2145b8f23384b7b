"""``ovs3d view``: a live web viewer of a run, with a text-query box."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime


@dataclass
class Config:
    """Open a run (stage 1 or 2) in a web viewer rendered from the browser's camera: rgb, depth, labels,
    the relevancy of typed queries, the scale selection; the dataset cameras and the spiral path.
    Binds 127.0.0.1 (this machine only) unless --host says otherwise; prints the URL to open."""

    run: Path
    """Run folder of `ovs3d reconstruct` or `ovs3d segment` (holds checkpoint.safetensors)."""
    host: str = "127.0.0.1"
    """Address to listen on. 127.0.0.1 serves this machine only; 0.0.0.0 would serve every network the
    machine is on (anyone who reaches it sees the scene): pass it only on purpose."""
    port: int = 8080
    """Port to listen on (the next free one when taken)."""
    out: Path | None = None
    """Folder for the path videos (default: <run>/view)."""
    height: int = 0
    """Height in pixels of a full frame (0: the run's resolution)."""
    target_ms: float = 150.0
    """Frame-time budget of the preview frames rendered while the camera moves."""
    path_frames: int = 60
    """Frames of the path video."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Products of the head and shading MLPs: auto = bf16 where the CPU/GPU has native bf16, else fp32."""
    weight_threshold: float = 1e-3
    """Samples with a smaller compositing weight are not shaded (1e-4: exactly what `ovs3d test` renders)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    from ovs3d.viewer.frames import ViewRenderer  # here, not at the top: viser takes seconds to import
    from ovs3d.viewer.server import Viewer  # (every verb's module is imported to parse any command line)

    device = config.runtime.apply()
    renderer = ViewRenderer.from_run(config.run, device, config.precision, config.weight_threshold)
    with renderer.field.frozen():        # the run does not change while viewed: every frame shares its lookups
        viewer = Viewer(renderer, config.host, config.port, out=config.out or Path(config.run) / "view",
                        target_ms=config.target_ms, height=config.height or None, path_frames=config.path_frames)
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"ovs3d view: warning: listening on {config.host}, not 127.0.0.1: anyone who can reach this "
                  f"machine on port {viewer.port} sees the scene", flush=True)
        print(f"ovs3d view: {renderer.encoder_label}", flush=True)
        print(f"ovs3d view: serving {config.run} at {viewer.url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("ovs3d view: stopped", flush=True)
        finally:
            viewer.stop()
