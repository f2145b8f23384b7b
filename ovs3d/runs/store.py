"""Run files: ``checkpoint.safetensors`` (+ ``checkpoint.json``) and ``config.yml``, the same for both
stages, written atomically, no pickles.

The safetensors file holds every tensor, named ``<section>.<name>``:

    field.<name>           the radiance field's state_dict (density and appearance grids, basis, MLP, box)
    occupancy.mask         [Gz, Gy, Gx] uint8 0/1 node mask, occupancy.box [2, 3]   (when there is one)
    semantic.<name>        the semantic model's own state_dict (head, selection grid, class text)   (stage 2)
    optim.<i>.<key>        Adam state per parameter index (exp_avg, exp_avg_sq, step)
    rng.<name>             generator states (uint8)

and, in its header metadata under "checkpoint", the run record (``runs/record.py``) as JSON, which
``checkpoint.json`` mirrors. The safetensors file is the source of truth (a kill between the two
writes leaves a consistent .safetensors and an older .json); ``checkpoint.json`` is for people and
scripts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ovs3d.config import CONFIG_FILE, config_yaml
from ovs3d.errors import InputError
from ovs3d.io.atomic import atomic_path, write_json_atomic, write_text_atomic
from ovs3d.runs.record import EARLIER_FORMATS, FORMAT, RunRecord, Stage

CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"
Sections = dict[str, dict[str, torch.Tensor]]
RERUN = {"reconstruct": "rerun `ovs3d reconstruct` into a fresh --out",
         "segment": "rerun `ovs3d segment` into a fresh --out"}


def write_run(run_dir: str | Path, record: RunRecord, sections: Sections) -> Path:
    """Write the sections' tensors and the record atomically; returns the checkpoint path."""
    run_dir = Path(run_dir)
    tensors = {f"{section}.{name}": value.detach().contiguous().cpu()
               for section, values in sections.items() for name, value in values.items()}
    meta = record.to_dict()
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"checkpoint": json.dumps(meta)})
    write_json_atomic(run_dir / CHECKPOINT_JSON, meta)
    return run_dir / CHECKPOINT


def read_run(run_dir: str | Path, device: torch.device | str = "cpu", stage: Stage | None = None
             ) -> tuple[RunRecord, Sections]:
    """(record, sections) of a run; InputError when the checkpoint is missing, unreadable, of an earlier
    ovs3d format, or (with ``stage``) of the other stage."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        what = {"reconstruct": "stage-1 ", "segment": "stage-2 "}.get(stage or "", "")
        fix = (f"run `ovs3d {stage}` first, or pass the run folder that holds {CHECKPOINT}" if stage else
               "pass the folder of an `ovs3d reconstruct` or `ovs3d segment` run")
        raise InputError(path, f"no {what}checkpoint here", fix)
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {}).get("checkpoint", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise InputError(path, f"cannot read the checkpoint ({exc})",
                         "rerun the stage with --resume, or retrain it") from exc
    if meta.get("format") in EARLIER_FORMATS:
        kind = "reconstruct" if meta["format"] == "ovs3d-tensorf-1" else "segment"
        raise InputError(path, f"this run was written by an earlier ovs3d (format {meta['format']}), which this "
                         f"version does not read", RERUN[kind])
    if meta.get("format") != FORMAT:
        raise InputError(path, f"not an ovs3d checkpoint (format {meta.get('format')!r})",
                         "pass the folder of an `ovs3d reconstruct` or `ovs3d segment` run")
    try:
        record = RunRecord.from_dict(meta)
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"the run record is damaged ({exc})", "rerun the stage") from exc
    if stage is not None and record.stage != stage:
        raise InputError(path, f"this is a {record.stage} run, not a {stage} run",
                         f"pass the folder of an `ovs3d {stage}` run")
    sections: Sections = {}
    for key, value in tensors.items():
        section, name = key.split(".", 1) if "." in key else (key, "")
        sections.setdefault(section, {})[name] = value
    return record, sections


def write_config(run_dir: str | Path, config) -> Path:
    """Write ``config.yml`` (the stage's config, readable back with ``config.read_config``)."""
    path = Path(run_dir) / CONFIG_FILE
    write_text_atomic(path, config_yaml(config))
    return path


def check_fresh(run_dir: str | Path, resume: bool) -> None:
    """Refuse to start a new run over a folder that holds a checkpoint (unless resuming)."""
    path = Path(run_dir) / CHECKPOINT
    if not resume and path.exists():
        raise InputError(path, "this run folder already holds a checkpoint",
                         "pass --resume to continue it, or choose another --out")


def optimizer_section(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """(tensors ``<index>.<slot>``, parameter groups) of an optimiser's state."""
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": torch.as_tensor(value)
               for index, slots in state["state"].items() for key, value in slots.items()}
    return tensors, state["param_groups"]


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    """Load the state written by ``optimizer_section`` into ``optimizer`` (built with the same groups)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, slot = key.split(".", 1)
        state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def generator_section(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """Generator states by name."""
    return {name: gen.get_state() for name, gen in generators.items()}
