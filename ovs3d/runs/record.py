"""The run record: one typed description of a stage-1 or stage-2 run, stored as JSON in the header of
``checkpoint.safetensors`` and mirrored to ``checkpoint.json`` (``runs/store.py``).

Paths in a record are absolute, so a run reads the same from any working directory.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FORMAT = "ovs3d-run-2"
EARLIER_FORMATS = ("ovs3d-tensorf-1", "ovs3d-segment-1")
Stage = Literal["reconstruct", "segment"]


@dataclass
class RunRecord:
    """What a run is and how to rebuild and render it.

    Attributes:
        stage: ``reconstruct`` (a radiance field) or ``segment`` (a semantic model over one).
        scene: absolute path of the scene folder the run was trained on.
        space: the ray space (``RaySpace.to_dict()``: name and box).
        step: the marching step (grid coordinates) to render the run with.
        width, height: the resolution the run was trained at (stage 2: the CLIP feature resolution).
        iteration: iterations done; complete: whether the stage finished them all.
        config: the stage's config as plain values (the same as ``config.yml``).
        arch: the radiance field's architecture (grid resolution, box, component counts).
        occupancy: box, resolution and occupied fraction of the occupancy grid, when there is one.
        semantic: the semantic model's architecture (stage 2).
        classes: the class prompts (stage 2); encoders: the names of the encoders used (stage 2);
        builtin_encoders: True when the weight-free built-in encoders (not CLIP or DINO) were used.
        inputs: what the stage read (stage-1 run, feature caches, CLIP settings and resolution).
        state: the trainer's resumable state (schedule counters, elapsed seconds).
        optimizer: the optimiser's parameter groups (hyperparameters; their tensors are in the checkpoint).
    """

    stage: Stage
    scene: str
    space: dict
    step: float
    width: int
    height: int
    iteration: int
    complete: bool
    config: dict
    arch: dict
    occupancy: dict | None = None
    semantic: dict | None = None
    classes: list[str] = field(default_factory=list)
    encoders: dict = field(default_factory=dict)
    builtin_encoders: bool = False
    inputs: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)
    optimizer: list | None = None
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunRecord":
        """The record of ``to_dict`` output; raises ValueError on missing or unknown fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown run record fields {sorted(unknown)}")
        return cls(**values)


def stage2_record(stage1: RunRecord, inputs: dict, config: dict, semantic: dict, stage1_dir: Path) -> RunRecord:
    """The record of a new (iteration 0, incomplete) stage-2 run over the stage-1 run ``stage1`` (read from
    ``stage1_dir``), with its teacher ``inputs`` (``train.segment.segment``), stage config and semantic
    architecture as plain values."""
    return RunRecord(stage="segment", scene=inputs["scene"], space=stage1.space, step=stage1.step,
                     width=inputs["width"], height=inputs["height"], iteration=0, complete=False, config=config,
                     arch=stage1.arch, occupancy=stage1.occupancy, semantic=semantic, classes=list(inputs["classes"]),
                     encoders=dict(inputs["encoders"]), builtin_encoders=bool(inputs["builtin_encoders"]),
                     inputs={"stage1": str(Path(stage1_dir).resolve()), **inputs["inputs"]})
