"""The authors' conventions, written out independently of ovs3d's importer (from the method spec, sections
2.2-2.5, 3.1, 3.5 and 6.1-6.3), to check it: their recentred poses (a reflection), their NDC rays, their
field evaluated as their TensorVMSplit does (``grid_sample`` over planes and lines), and checkpoints written
in their format (``torch.save`` of kwargs, an OrderedDict state_dict and an ``np.packbits`` alpha mask)."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ovs3d.scene.cameras import ndc_rays

MAT_MODE = [[0, 1], [0, 2], [1, 2]]
VEC_MODE = [2, 1, 0]
AUTHORS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "authors_ckpt"


def normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def authors_poses(scene: Path) -> tuple[np.ndarray, np.ndarray]:
    """(centred c2w [N, 3, 4], bounds [N, 2]) as the authors' LLFF loader makes them (TensoRF's average_poses:
    x = normalize(z cross y_mean), a reflection)."""
    data = np.load(scene / "poses_bounds.npy")
    poses, bounds = data[:, :15].reshape(-1, 3, 5), data[:, 15:].copy()
    poses = np.concatenate([poses[..., 1:2], -poses[..., :1], poses[..., 2:4]], -1)
    center = poses[..., 3].mean(0)
    z = normalize(poses[..., 2].mean(0))
    y_ = poses[..., 1].mean(0)
    x = normalize(np.cross(z, y_))
    y = np.cross(x, z)
    avg = np.eye(4)
    avg[:3] = np.stack([x, y, z, center], 1)
    homo = np.tile(np.eye(4), (len(poses), 1, 1))
    homo[:, :3] = poses[:, :, :4]
    centred = (np.linalg.inv(avg) @ homo)[:, :3]
    scale = bounds.min() * 0.75
    centred[..., 3] /= scale
    return centred, bounds / scale


def authors_rays(scene: Path, view: int, width: int, height: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC rays [H*W, 3] (origins, directions) of one view as the authors' loader makes them."""
    c2w = torch.tensor(authors_poses(scene)[0][view], dtype=torch.float32)
    j, i = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    dirs = torch.stack([(i - width / 2) / focal, -(j - height / 2) / focal, -torch.ones_like(i)], -1).reshape(-1, 3)
    rays_d = dirs @ c2w[:, :3].T
    rays_o = c2w[:, 3].expand_as(rays_d)
    return ndc_rays(rays_o, rays_d, focal, width, height)


def _vm_products(state: dict, prefix: str, xyz: torch.Tensor, aabb: torch.Tensor) -> list[torch.Tensor]:
    n = (xyz - aabb[0]) * (2.0 / (aabb[1] - aabb[0])) - 1
    plane_coord = torch.stack([n[:, m] for m in MAT_MODE]).view(3, -1, 1, 2)
    line = torch.stack([n[:, v] for v in VEC_MODE])
    line_coord = torch.stack((torch.zeros_like(line), line), -1).view(3, -1, 1, 2)
    out = []
    for i in range(3):
        p = F.grid_sample(state[f"{prefix}_plane.{i}"], plane_coord[[i]], align_corners=True).view(-1, xyz.shape[0])
        q = F.grid_sample(state[f"{prefix}_line.{i}"], line_coord[[i]], align_corners=True).view(-1, xyz.shape[0])
        out.append(p * q)
    return out


def authors_density(ckpt: dict, xyz: torch.Tensor) -> torch.Tensor:
    """ReLU(sum of density plane-line products) at their NDC points [M, 3]."""
    aabb = ckpt["kwargs"]["aabb"]
    return torch.relu(sum(p.sum(0) for p in _vm_products(ckpt["state_dict"], "density", xyz, aabb)))


def authors_appearance(ckpt: dict, xyz: torch.Tensor) -> torch.Tensor:
    state = ckpt["state_dict"]
    products = torch.cat(_vm_products(state, "app", xyz, ckpt["kwargs"]["aabb"]))
    return products.T @ state["basis_mat.weight"].T


def authors_rgb(ckpt: dict, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
    s = ckpt["state_dict"]
    h = torch.cat([features, viewdirs], -1)
    h = torch.relu(h @ s["renderModule.mlp.0.weight"].T + s["renderModule.mlp.0.bias"])
    h = torch.relu(h @ s["renderModule.mlp.2.weight"].T + s["renderModule.mlp.2.bias"])
    return torch.sigmoid(h @ s["renderModule.mlp.4.weight"].T + s["renderModule.mlp.4.bias"])


def authors_feature(ckpt: dict, features: torch.Tensor) -> torch.Tensor:
    s, h = ckpt["state_dict"], features
    for i in range(3):
        h = h @ s[f"feature_render_module.mlp.{i}.weight"].T + s[f"feature_render_module.mlp.{i}.bias"]
    return h


def authors_selection(ckpt: dict, xyz: torch.Tensor) -> torch.Tensor:
    s = ckpt["state_dict"]
    products = torch.cat(_vm_products(s, "select", xyz, ckpt["kwargs"]["aabb"]))
    return torch.sigmoid(products.T @ s["select_basis_mat.weight"].T + s["select_basis_mat.bias"])


def authors_mask_value(ckpt: dict, xyz: torch.Tensor) -> torch.Tensor:
    """Their AlphaGridMask.sample_alpha: trilinear lookup of the unpacked 0/1 volume (> 0 = occupied)."""
    shape = ckpt["alphaMask.shape"]
    volume = torch.from_numpy(np.unpackbits(ckpt["alphaMask.mask"])[:np.prod(shape)].reshape(shape)).float()
    aabb = ckpt["alphaMask.aabb"]
    n = (xyz - aabb[0]) * (2.0 / (aabb[1] - aabb[0])) - 1
    return F.grid_sample(volume, n.view(1, -1, 1, 1, 3), align_corners=True).view(-1)


def random_authors_checkpoint(grid=(20, 18, 10), stage2: bool = True, seed: int = 0, aabb=None,
                              feature_dim: int = 512) -> dict:
    """A checkpoint in the authors' format with random values (planes N(0, 0.3^2) plus a density offset, so
    that something is opaque), an alpha mask with holes, and, for stage 2, a feature head and selection."""
    g = torch.Generator().manual_seed(seed)
    gx, gy, gz = grid
    aabb = torch.tensor(aabb if aabb is not None else [[-1.5, -1.8, -1.0], [1.9, 1.6, 1.0]], dtype=torch.float32)
    comps = {"density": [4, 2, 2], "app": [6, 3, 3], "select": [4, 2, 2]}
    sizes = [(gy, gx), (gz, gx), (gz, gy)]
    lines = [gz, gy, gx]
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for prefix in ("density", "app") + (("select",) if stage2 else ()):
        for k in range(3):
            state[f"{prefix}_plane.{k}"] = 0.3 * torch.randn((1, comps[prefix][k], *sizes[k]), generator=g) + 0.2
        for k in range(3):
            state[f"{prefix}_line.{k}"] = 0.3 * torch.randn((1, comps[prefix][k], lines[k], 1), generator=g) + 0.5
    app = sum(comps["app"])

    def lin(o, i):
        return torch.randn((o, i), generator=g) / i ** 0.5

    state["basis_mat.weight"] = lin(27, app)
    for name, (o, i) in (("0", (128, 30)), ("2", (128, 128)), ("4", (3, 128))):
        state[f"renderModule.mlp.{name}.weight"] = lin(o, i)
        state[f"renderModule.mlp.{name}.bias"] = 0.1 * torch.randn(o, generator=g)
    if stage2:
        for i, (o, n) in enumerate(((128, 27), (128, 128), (feature_dim, 128))):
            state[f"feature_render_module.mlp.{i}.weight"] = lin(o, n)
            state[f"feature_render_module.mlp.{i}.bias"] = 0.1 * torch.randn(o, generator=g)
        state["select_basis_mat.weight"] = lin(3, sum(comps["select"]))
        state["select_basis_mat.bias"] = 0.1 * torch.randn(3, generator=g)
    kwargs = {"aabb": aabb, "gridSize": [gx, gy, gz], "density_n_comp": comps["density"],
              "appearance_n_comp": comps["app"], "app_dim": 27, "density_shift": -10, "alphaMask_thres": 0.0001,
              "distance_scale": 25, "rayMarch_weight_thres": 0.0001, "fea2denseAct": "relu", "near_far": [-0.5, 1.5],
              "step_ratio": 0.5, "shadingMode": "MLP_Fea", "pos_pe": 6, "view_pe": 0, "fea_pe": 0, "featureC": 128}
    mask = (torch.rand((gz, gy, gx), generator=g) > 0.3).numpy()
    mask[:, :, : gx // 3] = False                      # an empty slab at low x: the mirror must move it to high x
    return {"kwargs": kwargs, "state_dict": state, "alphaMask.shape": (1, 1, gz, gy, gx),
            "alphaMask.mask": np.packbits(mask.reshape(-1)), "alphaMask.aabb": aabb.clone()}


def save_authors_checkpoint(ckpt: dict, path: Path) -> Path:
    """``torch.save`` as the authors' train.py does."""
    torch.save(ckpt, path)
    return path
