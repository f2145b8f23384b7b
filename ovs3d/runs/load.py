"""``load_run``: rebuild the model of any run folder, stage 1 (a radiance field) or stage 2 (a semantic
model), from its checkpoint (``runs/store.py``), ready for inference."""

from __future__ import annotations

from pathlib import Path

import torch

from ovs3d.config import from_plain
from ovs3d.errors import InputError
from ovs3d.features.encoders import ClipConfig, ImageTextEncoder
from ovs3d.features.registry import build_image_text_encoder
from ovs3d.field.lifted import LiftedConfig, LiftedField
from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF
from ovs3d.runs.record import RunRecord, Stage
from ovs3d.runs.store import CHECKPOINT, Sections, read_run
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


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path | None) -> None:
    """``module.load_state_dict(state)``; tensors that do not fit the record's architecture (an edited or
    mismatched checkpoint) are an InputError naming ``path``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise InputError(path, f"the checkpoint's tensors do not fit its run record ({first})",
                         "the file was edited or damaged: rerun the stage into a fresh --out") from None


def build_field(record: RunRecord, sections: Sections, device: torch.device | str = "cpu",
                path: str | Path | None = None) -> TensoRF:
    """The radiance field (with its occupancy grid) of a run's record and sections (``path``: for errors)."""
    try:
        field = TensoRF.from_arch(record.arch, space_from_dict(record.space))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"the run record's architecture is damaged ({exc})", "rerun the stage") from None
    load_state(field, sections.get("field", {}), path)
    field = field.to(device)
    if "occupancy" in sections:
        occupancy = sections["occupancy"]
        field.occupancy = OccupancyGrid(occupancy["mask"].bool().to(device), occupancy["box"].to(device))
    return field


def build_semantic(record: RunRecord, sections: Sections, device: torch.device | str = "cpu",
                   path: str | Path | None = None) -> SemanticField | LiftedField:
    """The semantic model of a stage-2 run's record and sections (its radiance field included): a trained
    ``SemanticField`` (modes faithful, improved) or a ``LiftedField`` (mode instant)."""
    field = build_field(record, sections, device, path)
    if (record.semantic or {}).get("mode") == "instant":
        n_nodes = int(sections.get("semantic", {}).get("features", torch.zeros(0)).shape[0])
        model = LiftedField(field, from_plain(LiftedConfig, record.semantic), n_classes=len(record.classes),
                            n_nodes=n_nodes).to(device)
    else:
        model = SemanticField(field, from_plain(SemanticConfig, record.semantic), n_classes=len(record.classes)).to(device)
    load_state(model, semantic_state(sections), path)
    return model


def semantic_state(sections: Sections) -> dict[str, torch.Tensor]:
    """The SemanticField state_dict held by a stage-2 checkpoint's sections."""
    state = {f"field.{k}": v for k, v in sections.get("field", {}).items()}
    state.update(sections.get("semantic", {}))
    return state


def load_run(run_dir: str | Path, device: torch.device | str = "cpu", stage: Stage | None = None
             ) -> tuple[TensoRF | SemanticField | LiftedField, RunRecord]:
    """(model in eval mode, record) of a run folder: a ``TensoRF`` for a stage-1 run, a ``SemanticField``
    or ``LiftedField`` (its class text embeddings in ``model.class_text``) for a stage-2 run. ``stage`` insists on one kind."""
    record, sections = read_run(run_dir, device, stage)
    path = Path(run_dir) / CHECKPOINT
    model = build_field(record, sections, device, path) if record.stage == "reconstruct" else \
        build_semantic(record, sections, device, path)
    model.eval()
    return model, record


def run_text_encoder(record: RunRecord, device: torch.device | str) -> ImageTextEncoder:
    """The image-text encoder a stage-2 run was trained with, rebuilt from its recorded CLIP settings (so
    that new texts are embedded in the run's own space); WeightsUnavailableError when its weights are not
    here, InputError when the record does not name its encoder."""
    settings = record.inputs.get("clip_config")
    if settings is None:
        raise InputError(None, "the run does not record its text encoder (no clip_config in its inputs)",
                         "retrain stage 2 with this version, or query a run that records its CLIP settings")
    return build_image_text_encoder(from_plain(ClipConfig, settings), torch.device(device))
