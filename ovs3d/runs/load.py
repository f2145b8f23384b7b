"""``load_run``: rebuild the model of any run folder, stage 1 (a radiance field) or stage 2 (a semantic
model), from its checkpoint (``runs/store.py``), ready for inference."""

from __future__ import annotations

from pathlib import Path

import torch

from ovs3d.config import from_plain
from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF
from ovs3d.runs.record import RunRecord, Stage
from ovs3d.runs.store import Sections, read_run
from ovs3d.scene.rayspace import space_from_dict


def field_sections(field: TensoRF) -> Sections:
    """The ``field`` and ``occupancy`` sections of a radiance field."""
    sections: Sections = {"field": dict(field.state_dict())}
    if field.occupancy is not None:
        sections["occupancy"] = {"mask": field.occupancy.mask.to(torch.uint8), "box": field.occupancy.box}
    return sections


def occupancy_info(field: TensoRF) -> dict | None:
    """The record's description of the field's occupancy grid."""
    occ = field.occupancy
    if occ is None:
        return None
    return {"box": occ.box.tolist(), "reso": list(occ.node_reso), "fraction_occupied": occ.fraction_occupied()}


def build_field(record: RunRecord, sections: Sections, device: torch.device | str = "cpu") -> TensoRF:
    """The radiance field (with its occupancy grid) of a run's record and sections."""
    field = TensoRF.from_arch(record.arch, space_from_dict(record.space))
    field.load_state_dict(sections["field"])
    field = field.to(device)
    if "occupancy" in sections:
        occupancy = sections["occupancy"]
        field.occupancy = OccupancyGrid(occupancy["mask"].bool().to(device), occupancy["box"].to(device))
    return field


def build_semantic(record: RunRecord, sections: Sections, device: torch.device | str = "cpu") -> SemanticField:
    """The semantic model of a stage-2 run's record and sections (its radiance field included)."""
    model = SemanticField(build_field(record, sections, device), from_plain(SemanticConfig, record.semantic),
                          n_classes=len(record.classes)).to(device)
    model.load_state_dict(semantic_state(sections))
    return model


def semantic_state(sections: Sections) -> dict[str, torch.Tensor]:
    """The SemanticField state_dict held by a stage-2 checkpoint's sections."""
    state = {f"field.{k}": v for k, v in sections["field"].items()}
    state.update(sections["semantic"])
    return state


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", stage: Stage | None = None
             ) -> tuple[TensoRF | SemanticField, RunRecord]:
    """(model in eval mode, record) of a run folder: a ``TensoRF`` for a stage-1 run, a ``SemanticField``
    (its class text embeddings in ``model.class_text``) for a stage-2 run. ``stage`` insists on one kind."""
    record, sections = read_run(run_dir, device, stage)
    model = build_field(record, sections, device) if record.stage == "reconstruct" else \
        build_semantic(record, sections, device)
    model.eval()
    return model, record
