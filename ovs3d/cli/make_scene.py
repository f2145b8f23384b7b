"""``ovs3d make-scene``: render the embedded synthetic scene (3D-OVS layout, exact ground truth)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ovs3d.scene.synthetic import SyntheticConfig, make_synthetic_scene


@dataclass(kw_only=True)
class Config(SyntheticConfig):
    """Render the procedural synthetic scene (5 objects, floor, wall) with exact depth and class masks."""

    out: Path
    """Folder to create (must not exist or be empty, unless --overwrite)."""
    overwrite: bool = False
    """Replace a non-empty existing --out folder."""


def main(config: Config) -> None:
    scene = {f.name: getattr(config, f.name) for f in fields(SyntheticConfig)}
    print(f"wrote {make_synthetic_scene(config.out, overwrite=config.overwrite, **scene)}")
