"""The authors' 3D-OVS checkpoints (``train.py`` / ``train_seg.py`` ``.th`` files, TensorVMSplit) as ovs3d
models: names, conventions and the mirror.

A checkpoint is ``{"kwargs", "state_dict", "alphaMask.shape", "alphaMask.mask", "alphaMask.aabb"}``
(method spec 3.5), read as data only (``io/torch_checkpoint.py``). Names map one to one:

    density_plane.k / density_line.k      -> field density_grid.planes.k / .lines.k
    app_plane.k / app_line.k, basis_mat    -> field appearance_grid.*, basis
    renderModule.mlp.{0,2,4}               -> field mlp.{0,2,4}        (input [a(x) (27), view dir (3)])
    feature_render_module.mlp.{0,1,2}      -> semantic head.{0,1,2}    (stage 2; affine, faithful mode)
    select_plane.k / select_line.k         -> semantic selection_grid.* (stage 2)
    select_basis_mat                       -> semantic select_basis    (stage 2; sigmoid scores, faithful)
    alphaMask.mask (np.packbits of [1, 1, Gz, Gy, Gx]) + .aabb -> the occupancy grid

The plane/line layouts, the mode order (XY-Z, XZ-Y, YZ-X) and the ``grid_sample(align_corners=True)``
lookups are the same as ours, so nothing is transposed. What differs is the frame: the authors' average
pose has x = z cross y, a reflection, where ours is the proper rotation x = y cross z (``scene/normalize.py``).
Their recentred cameras are ours with the world x axis negated, and so are their NDC rays (NDC is linear in
x), so their field at NDC point (x, y, z) is ours at (-x, y, z). The import therefore mirrors x: the box's
x range becomes [-x_max, -x_min]; every plane whose width axis is x (modes 0 and 1) and the x line (mode 2)
are flipped along x, and so is the occupancy mask; the shading MLP's view-direction input x (column 27 of
its first layer) changes sign. Appearance features, the feature head and the selection basis are
unchanged (they never see a direction).

Marching: the authors sample N points evenly over t in [-0.5, 1.5] of every NDC ray (N = nSamples =
int(box diagonal / (step_ratio * mean voxel)) + 1 at test time), a world step of 2 ||d'|| / (N - 1) per
ray; ours is one world step for all rays, set to that value at the mean ||d'|| of the scene's rays
(``authors_step``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ovs3d.errors import InputError
from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF, TensoRFConfig
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.rayspace import NDC_BOX, RaySpace

FIX = "pass a checkpoint written by the authors' train.py (stage 1) or train_seg.py (stage 2)"
FIELD_KEYS = [f"{kind}_{part}.{k}" for kind in ("density", "app") for part in ("plane", "line") for k in range(3)] + \
    ["basis_mat.weight"] + [f"renderModule.mlp.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")]
SEMANTIC_KEYS = [f"feature_render_module.mlp.{i}.{p}" for i in range(3) for p in ("weight", "bias")] + \
    [f"select_{part}.{k}" for part in ("plane", "line") for k in range(3)] + \
    ["select_basis_mat.weight", "select_basis_mat.bias"]
SUPPORTED = {"shadingMode": "MLP_Fea", "fea2denseAct": "relu", "view_pe": 0, "fea_pe": 0}
VIEWDIR_X = 27   # column of the shading MLP's first layer that reads the view direction's x (after a(x))


def check_checkpoint(ckpt: Any, path) -> str:
    """``"reconstruct"`` or ``"segment"`` for a complete authors' checkpoint; InputError naming what is
    missing or unsupported otherwise."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("kwargs"), dict) or \
            not isinstance(ckpt.get("state_dict"), dict):
        raise InputError(path, "not an authors' 3D-OVS checkpoint (no 'kwargs' and 'state_dict')", FIX)
    kwargs, state = ckpt["kwargs"], ckpt["state_dict"]
    for key, value in SUPPORTED.items():
        if kwargs.get(key, value) != value:
            raise InputError(path, f"the checkpoint's {key} is {kwargs.get(key)!r}; only {value!r} (the authors' "
                             f"setting) is supported", FIX)
    needed = ["aabb", "gridSize", "density_n_comp", "appearance_n_comp", "app_dim", "near_far", "step_ratio"]
    missing = [f"kwargs[{k!r}]" for k in needed if k not in kwargs] + [k for k in FIELD_KEYS if k not in state]
    if missing:
        raise InputError(path, f"the checkpoint lacks {', '.join(missing[:6])} (a TensorVMSplit checkpoint has them)",
                         FIX)
    semantic = [k for k in SEMANTIC_KEYS if k in state]
    if semantic and len(semantic) < len(SEMANTIC_KEYS):
        absent = [k for k in SEMANTIC_KEYS if k not in state]
        raise InputError(path, f"the stage-2 checkpoint lacks {', '.join(absent[:6])}", FIX)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise InputError(path, f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor", FIX)
    return "segment" if semantic else "reconstruct"


def mirror_box(box: torch.Tensor) -> torch.Tensor:
    """[2, 3] box with its x range mirrored: [x_min, x_max] -> [-x_max, -x_min]."""
    out = box.clone()
    out[0, 0], out[1, 0] = -box[1, 0], -box[0, 0]
    return out


def mirrored_vm(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``<prefix>_plane.k`` / ``<prefix>_line.k`` as our ``planes.k`` / ``lines.k``, mirrored in x: the planes
    of modes 0 (XY) and 1 (XZ) along their width (x), the line of mode 2 (X) along its length."""
    out = {}
    for k in range(3):
        plane, line = state[f"{prefix}_plane.{k}"].float(), state[f"{prefix}_line.{k}"].float()
        out[f"planes.{k}"] = plane.flip(3) if k in (0, 1) else plane.clone()
        out[f"lines.{k}"] = line.flip(2) if k == 2 else line.clone()
    return out


def unpack_mask(ckpt: dict, path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(bool node mask [Gz, Gy, Gx], box [2, 3]) of the checkpoint's alpha mask (``np.packbits`` of a
    [1, 1, Gz, Gy, Gx] volume), as the authors stored it; None when it has none."""
    if "alphaMask.mask" not in ckpt:
        return None
    shape = [int(s) for s in ckpt.get("alphaMask.shape", ())]
    packed = ckpt["alphaMask.mask"]
    aabb = ckpt.get("alphaMask.aabb")
    if len(shape) != 5 or not isinstance(packed, np.ndarray) or packed.dtype != np.uint8 or \
            not isinstance(aabb, torch.Tensor) or tuple(aabb.shape) != (2, 3):
        raise InputError(path, "the checkpoint's alpha mask is damaged (shape, packed bits or aabb)", FIX)
    count = math.prod(shape)
    bits = np.unpackbits(packed.reshape(-1))
    if bits.size < count:
        raise InputError(path, f"the alpha mask holds {bits.size} bits for a {shape} volume", FIX)
    mask = torch.from_numpy(bits[:count].reshape(shape)[0, 0].astype(bool))
    return mask, aabb.float()


def authors_field(ckpt: dict, space: RaySpace, path=None) -> TensoRF:
    """Our ``TensoRF`` (mirrored in x, with its occupancy grid) of an authors' checkpoint."""
    kwargs, state = ckpt["kwargs"], ckpt["state_dict"]
    reso = tuple(int(g) for g in kwargs["gridSize"])
    config = TensoRFConfig(density_components=tuple(int(c) for c in kwargs["density_n_comp"]),
                           appearance_components=tuple(int(c) for c in kwargs["appearance_n_comp"]),
                           appearance_dim=int(kwargs["app_dim"]), mlp_width=int(kwargs.get("featureC", 128)),
                           distance_scale=float(kwargs.get("distance_scale", 25.0)))
    field = TensoRF(space, reso, config)
    ours = {f"density_grid.{k}": v for k, v in mirrored_vm(state, "density").items()}
    ours.update({f"appearance_grid.{k}": v for k, v in mirrored_vm(state, "app").items()})
    ours["basis.weight"] = state["basis_mat.weight"].float()
    for i in (0, 2, 4):
        ours[f"mlp.{i}.weight"] = state[f"renderModule.mlp.{i}.weight"].float().clone()
        ours[f"mlp.{i}.bias"] = state[f"renderModule.mlp.{i}.bias"].float()
    ours["mlp.0.weight"][:, VIEWDIR_X] *= -1
    ours["box"] = mirror_box(torch.as_tensor(kwargs["aabb"]).float().reshape(2, 3))
    try:
        field.load_state_dict(ours)
    except RuntimeError as exc:
        raise InputError(path, f"the checkpoint's tensors do not fit its kwargs ({str(exc).splitlines()[-1].strip()})",
                         FIX) from None
    mask = unpack_mask(ckpt, path)
    if mask is not None:
        field.occupancy = OccupancyGrid(mask[0].flip(2), mirror_box(mask[1]))
    return field


def authors_semantic(ckpt: dict, field: TensoRF, text: torch.Tensor, path=None) -> SemanticField:
    """Our faithful ``SemanticField`` over ``field`` of an authors' stage-2 checkpoint, its class text set to
    ``text`` [C, D]. When D is below the head's width (the authors' run saw D-dimensional embeddings
    zero-padded to 512, as the fixture's stand-in did), only the head's first D outputs are kept: the
    cosine with a zero-padded text and the argmax over classes are unchanged."""
    state = ckpt["state_dict"]
    width = int(state["feature_render_module.mlp.2.weight"].shape[0])
    dim = int(text.shape[1])
    if dim > width:
        raise InputError(path, f"the text embeddings have {dim} dimensions, the checkpoint's feature head {width}",
                         "embed the class prompts with the encoder the checkpoint was trained with (--extract.clip.*)")
    selection = tuple(int(state[f"select_plane.{k}"].shape[1]) for k in range(3))
    config = SemanticConfig(mode="faithful", feature_dim=dim, hidden=int(state["feature_render_module.mlp.0.weight"].shape[0]),
                            selection_components=selection, n_scales=int(state["select_basis_mat.weight"].shape[0]))
    model = SemanticField(field, config, n_classes=int(text.shape[0]))
    ours = {f"head.{i}.{p}": state[f"feature_render_module.mlp.{i}.{p}"].float() for i in range(3)
            for p in ("weight", "bias")}
    ours["head.2.weight"], ours["head.2.bias"] = ours["head.2.weight"][:dim], ours["head.2.bias"][:dim]
    ours.update({f"selection_grid.{k}": v for k, v in mirrored_vm(state, "select").items()})
    ours["select_basis.weight"] = state["select_basis_mat.weight"].float()
    ours["select_basis.bias"] = state["select_basis_mat.bias"].float()
    ours["class_text"] = text.float()
    try:
        model.load_state_dict({**{f"field.{k}": v for k, v in field.state_dict().items()}, **ours})
    except RuntimeError as exc:
        raise InputError(path, f"the stage-2 tensors do not fit the field ({str(exc).splitlines()[-1].strip()})",
                         FIX) from None
    return model


def authors_samples(kwargs: dict) -> int:
    """The authors' test-time samples per ray: int(||aabb size|| / (step_ratio * mean(size / (gridSize - 1)))) + 1."""
    size = torch.as_tensor(kwargs["aabb"]).double().reshape(2, 3)
    size = size[1] - size[0]
    units = size / (torch.tensor([float(g) for g in kwargs["gridSize"]], dtype=torch.float64) - 1)
    return int(float(size.norm()) / (float(units.mean()) * float(kwargs["step_ratio"]))) + 1


def authors_step(kwargs: dict, cameras: Cameras, space: RaySpace) -> float:
    """Our marching step for an authors' field: their t spacing (near_far span / (N - 1)) times the mean
    ||d'|| of the scene's rays (every pixel of every camera)."""
    near, far = (float(x) for x in kwargs["near_far"])
    n = authors_samples(kwargs)
    u, v = cameras.pixel_grid()
    norms = []
    for view in range(len(cameras)):
        index = torch.full((u.numel(),), view, dtype=torch.long)
        _, d = space.rays(cameras, index, u.reshape(-1), v.reshape(-1))
        norms.append(d.norm(dim=-1).double().mean())
    return (far - near) / (n - 1) * float(torch.stack(norms).mean())


def check_space(kwargs: dict, space: RaySpace, path) -> None:
    """The authors' LLFF checkpoints live in NDC with the loader's box; anything else is refused."""
    box = torch.as_tensor(kwargs["aabb"]).float().reshape(2, 3)
    ndc = torch.tensor(NDC_BOX)
    if space.name != "ndc" or (box[0] < ndc[0] - 1e-4).any() or (box[1] > ndc[1] + 1e-4).any():
        raise InputError(path, f"the checkpoint's box {box.tolist()} is not inside the LLFF NDC box {list(NDC_BOX)} "
                         f"(ray space {space.name})", "import checkpoints of forward-facing (LLFF) scenes")
