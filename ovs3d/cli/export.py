"""``ovs3d export``: a stage-2 run's segmentation as files (labelled point cloud, per-class meshes, objects)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.export.run import ExportConfig, What, export_run


@dataclass
class Config:
    """Export the segmented scene in the coordinate frame of the input poses: `pointcloud` (points.ply: x y z
    red green blue, then label and score_<k>; classes.json), `mesh` (one PLY per class and mesh/scene.glb
    with a node per class), `object` (what each --text selects: points and mesh), `all` (the three);
    cameras.json always."""

    what: tyro.conf.Positional[What]
    """pointcloud, mesh, object or all."""
    run: Path
    """Stage-2 run folder (from `ovs3d segment`)."""
    text: Annotated[list[str], tyro.conf.UseAppendAction] = field(default_factory=list)
    """A query text for `object` (and `all`); repeat --text for several."""
    out: Path | None = None
    """Output folder (default: <run>/export)."""
    data: Path | None = None
    """Scene folder (default: the run's)."""
    export: ExportConfig = field(default_factory=ExportConfig)
    """Label rule, object threshold, point and mesh settings."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main(config: Config) -> None:
    summary = export_run(config.run, config.what, config.out, config.text, config.data, config.export,
                         device=config.runtime.apply())
    for entry in summary["files"]:
        counts = ", ".join(f"{k} {v}" for k, v in entry.items() if k not in ("file", "bytes", "per_class", "nodes"))
        print(f"  {entry['file']:<40} {human_bytes(entry['bytes']):>9}  {counts}")
        if "per_class" in entry:
            print("    " + ", ".join(f"{name}: {n}" for name, n in entry["per_class"].items()))
    print(f"ovs3d export: {summary['points']} surface points, {summary['seconds']['total']:.1f} s; wrote {summary['out']}")
