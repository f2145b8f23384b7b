"""``ovs3d relevancy``: one view's per-scale, per-class relevancy maps, to check prompts before training."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.features.extract import ExtractConfig
from ovs3d.features.prompt_check import write_relevancy_view
from ovs3d.scene.annotations import read_classes


@dataclass
class Config:
    """Write one view's min-max relevancy map per scale and class (colour-mapped PNGs + a side-by-side
    sheet). Reads the view's features from the cache, or computes that view only and caches it."""

    data: Path
    """Scene folder (with images/)."""
    view: int = 0
    """Image index (sorted order) of the view to inspect."""
    classes_file: Path | None = None
    """Class prompts, one per line (default: <scene>/segmentations/classes.txt)."""
    out: Path | None = None
    """Output folder (default: outputs/<scene name>/relevancy/view_<K>)."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Encoders and the CLIP hierarchy (--extract.clip.kind, --extract.clip.weights, ...)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    classes = read_classes(config.classes_file or config.data / "segmentations" / "classes.txt")
    out = config.out or Path("outputs") / config.data.resolve().name / "relevancy" / f"view_{config.view}"
    write_relevancy_view(config.data, config.extract, config.view, classes, out, device=config.runtime.apply())
