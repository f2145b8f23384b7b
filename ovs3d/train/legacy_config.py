"""The authors' per-scene ``.txt`` configs (``key = value`` lines), mapped onto ``SegmentConfig``
(``ovs3d segment --legacy-config configs/bed.txt``); each unknown key is warned about once."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from ovs3d.errors import InputError
from ovs3d.scene.rayspace import NDC_BOX
from ovs3d.train.configs import SegmentConfig

# The authors' keys that map onto SegmentConfig fields.
_LEGACY_MAP = {"n_iters": "iterations", "joint_start_iter": "joint_start_iter", "batch_size": "batch_size",
               "patch_num": "patch_num", "patch_size": "patch_size", "lr_init": "lr_grid", "lr_basis": "lr_network",
               "relevancy_weight": "relevancy_weight", "dino_pos_weight": "dino_pos_weight",
               "dino_neg_weight": "dino_neg_weight", "dino_shift": "dino_shift", "temperature": "temperature"}
# The authors' keys that ovs3d gets elsewhere (paths, the stage-1 run, the feature cache) or does not need.
_LEGACY_KNOWN = {"dataset_name", "datadir", "ckpt", "feature_dir", "basedir", "expname", "has_segmentation_maps",
                 "ray_downsample_train", "patch_downsample_train", "ndc_ray", "N_voxel_final", "upsamp_list",
                 "update_AlphaMask_list", "n_lamb_sigma", "n_lamb_sh", "fea2denseAct", "chunk_size", "clip_input",
                 "test_prompt"}


def legacy_samples_per_ray(n_voxel: int, box=NDC_BOX, step_ratio: float = 0.5) -> int:
    """The authors' stage-2 sample count: int(||N_to_reso(n_voxel, box)|| / step_ratio) (482 for 2,097,156)."""
    extent = np.array(box[1]) - np.array(box[0])
    voxel = (extent.prod() / n_voxel) ** (1 / 3)
    reso = np.floor(extent / voxel)
    return int(np.linalg.norm(reso) / step_ratio)


def read_legacy_config(path: str | Path, base: SegmentConfig) -> SegmentConfig:
    """Apply an authors' ``key = value`` .txt config to ``base``; warn once per unknown key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the legacy config file does not exist", "pass the path of an authors' configs/<scene>.txt")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "the file is not UTF-8 text", "save it as UTF-8 (plain `key = value` lines)") from None
    values: dict = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise InputError(path, f"line {number} is not 'key = value': {raw!r}", "fix or comment out the line")
        key, value = (part.strip() for part in line.split("=", 1))
        if key in _LEGACY_MAP:
            name = _LEGACY_MAP[key]
            kind = type(getattr(base, name))
            try:
                values[name] = kind(float(value)) if kind is int else kind(value)
            except ValueError:
                raise InputError(path, f"line {number}: {key} = {value!r} is not a number", "write a number") from None
        elif key == "N_voxel_init":
            values["samples_per_ray"] = legacy_samples_per_ray(int(float(value)))
        elif key not in _LEGACY_KNOWN:
            warnings.warn(f"{path}: unknown key '{key}' ignored", stacklevel=2)
    return replace(base, **values)
