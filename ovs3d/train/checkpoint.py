"""Stage-1 run checkpoints: ``checkpoint.safetensors`` + ``checkpoint.json``, written atomically, no pickles.

The safetensors file holds every tensor:
    field.<name>                the field's state_dict (planes, lines, basis, MLP, box)
    occupancy.mask [Gz,Gy,Gx]   uint8 0/1 node mask, occupancy.box [2, 3]   (when an alpha mask exists)
    optim.<i>.<key>             Adam state per parameter index (exp_avg, exp_avg_sq, step)
    rng.<name>                  generator states (uint8)
and, in its header metadata under "checkpoint", the same JSON that ``checkpoint.json`` mirrors:
format, arch (grid reso, box, component counts), occupancy box and reso, iteration, optimiser groups
and the trainer's state. The safetensors file is the source of truth (a kill between the two writes
leaves a consistent .safetensors and an older .json); ``checkpoint.json`` is for people and scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ovs3d.errors import InputError
from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.field.tensorf import TensoRF
from ovs3d.io.atomic import atomic_path, write_json_atomic

FORMAT = "ovs3d-tensorf-1"
CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_JSON = "checkpoint.json"


def save_checkpoint(run_dir: str | Path, field: TensoRF, state: dict[str, Any],
                    optimizer: torch.optim.Optimizer | None = None,
                    generators: dict[str, torch.Generator] | None = None) -> Path:
    """Write the field (+ occupancy), optimiser and generator states and ``state`` (JSON-able) atomically."""
    run_dir = Path(run_dir)
    tensors = {f"field.{k}": v.detach().contiguous().cpu() for k, v in field.state_dict().items()}
    meta: dict[str, Any] = {"format": FORMAT, "arch": field.arch(), **state}
    if field.occupancy is not None:
        tensors["occupancy.mask"] = field.occupancy.mask.to(torch.uint8).contiguous().cpu()
        tensors["occupancy.box"] = field.occupancy.box.contiguous().cpu()
        meta["occupancy"] = {"box": field.occupancy.box.tolist(), "reso": list(field.occupancy.node_reso),
                             "fraction_occupied": field.occupancy.fraction_occupied()}
    if optimizer is not None:
        opt_state = optimizer.state_dict()
        for index, slots in opt_state["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
        meta["optimizer"] = [{k: v for k, v in group.items()} for group in opt_state["param_groups"]]
    for name, gen in (generators or {}).items():
        tensors[f"rng.{name}"] = gen.get_state().contiguous()
    text = json.dumps(meta)
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"checkpoint": text})
    write_json_atomic(run_dir / CHECKPOINT_JSON, meta)
    return run_dir / CHECKPOINT


def load_checkpoint(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a run's checkpoint; InputError when it is missing or not a stage-1 checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise InputError(path, "no stage-1 checkpoint here",
                         "run `ovs3d reconstruct` first, or pass the run folder that holds checkpoint.safetensors")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {}).get("checkpoint", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError) as exc:   # safetensors raises SafetensorError (a RuntimeError)
        raise InputError(path, f"cannot read the checkpoint ({exc})", "rerun `ovs3d reconstruct --resume` "
                         "or retrain") from exc
    if meta.get("format") != FORMAT:
        raise InputError(path, f"not an ovs3d stage-1 checkpoint (format {meta.get('format')!r})",
                         "pass the folder of an `ovs3d reconstruct` run")
    return tensors, meta


def field_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict,
                          device: torch.device | str = "cpu") -> TensoRF:
    """Rebuild the field (with its occupancy grid) from loaded checkpoint tensors and metadata."""
    field = TensoRF.from_arch(meta["arch"])
    field.load_state_dict({k[len("field."):]: v for k, v in tensors.items() if k.startswith("field.")})
    field = field.to(device)
    if "occupancy.mask" in tensors:
        field.occupancy = OccupancyGrid(tensors["occupancy.mask"].bool().to(device), tensors["occupancy.box"].to(device))
    return field


def load_field(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[TensoRF, dict]:
    """The trained stage-1 field of a run (occupancy grid attached as ``field.occupancy``) and its metadata.

    ``meta`` holds ``arch``, ``iteration``, ``n_samples`` and ``step`` (the marching step to render with),
    ``scene``, ``kind`` and the reconstruction config.
    """
    tensors, meta = load_checkpoint(run_dir, device)
    field = field_from_checkpoint(tensors, meta, device)
    field.eval()
    return field, meta


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load the Adam state saved by ``save_checkpoint`` into ``optimizer`` (built with the same groups)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, slot = key.split(".", 2)
            state.setdefault(int(index), {})[slot] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]})


def restore_generator(generator: torch.Generator, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Set ``generator`` to the state saved under ``rng.<name>`` (no-op when absent)."""
    if f"rng.{name}" in tensors:
        generator.set_state(tensors[f"rng.{name}"].cpu())
