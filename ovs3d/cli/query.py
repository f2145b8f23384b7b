"""``ovs3d query``: relevancy maps of free text from a trained stage-2 run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from ovs3d.cli.common import RuntimeFlags
from ovs3d.device import Runtime
from ovs3d.eval.query import run_query


@dataclass
class Config:
    """Relevancy of texts never seen in training: each view's features are rendered once and cached,
    each query is then a matrix product (its milliseconds are reported)."""

    run: Path
    """Stage-2 run folder (from `ovs3d segment`)."""
    text: Annotated[list[str], tyro.conf.UseAppendAction] = field(default_factory=list)
    """A query text; repeat --text for several."""
    view: Annotated[list[int], tyro.conf.UseAppendAction] = field(default_factory=list)
    """Image index to render; repeat for several (default: the first training view)."""
    out: Path | None = None
    """Output folder (default: <run>/query)."""
    data: Path | None = None
    """Scene folder (default: the run's)."""
    runtime: RuntimeFlags = field(default_factory=Runtime)


def main(config: Config) -> None:
    result = run_query(config.run, config.text, config.view, config.out, config.data, config.runtime.apply())
    for t in result["timings"]:
        print(f"view {t['view']}: {t['ms_per_query']:.3f} ms per query on the cached view "
              f"(render/load {t['feature_render_or_load_s']:.2f} s)")
    print(f"wrote {config.out or Path(config.run) / 'query'}")
