"""TensoRF radiance field with the vector-matrix (VM) decomposition (method spec section 3.1).

Each of density and appearance is a sum over three modes k of plane-line products. Mode k pairs a
plane over axes (a, b) with a line along the remaining axis c:

    mode 0: XY plane, Z line;  mode 1: XZ plane, Y line;  mode 2: YZ plane, X line.

A plane is a parameter [1, R_k, G_b, G_a] and a line [1, R_k, G_c, 1] (G = grid size per axis). Both
are sampled with ``grid_sample(align_corners=True)`` at coordinates normalised to [-1, 1] over the box,
so grid node i of an axis with G nodes sits at box_min + i * (box_max - box_min) / (G - 1).

    density:     sigma(x) = ReLU( sum_k sum_r P_kr(x_ab) L_kr(x_c) )                      scalar
    appearance:  a(x) = B [ P_kr(x_ab) L_kr(x_c) ]_(k,r)    B: Linear(sum R_k -> 27, no bias)
    colour:      c(x, d) = sigmoid(MLP([a(x), d]))           MLP: 30 -> 128 -> 128 -> 3, ReLU between

with R = (16, 4, 4) for density and (48, 12, 12) for appearance, and d the unit view direction (in
NDC for forward-facing scenes). All planes and lines start from N(0, 0.1^2).

The field takes points in *normalised box coordinates* xyz in [-1, 1]^3 (``normalize`` maps world
points there); ``distance_scale`` (25) multiplies densities when they are turned into opacities
(``render/volume.py``). An optional occupancy grid (``field/occupancy.py``) rides along as
``field.occupancy`` so renderers and checkpoints find it with the field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

# (plane axes (a, b), line axis c) per mode; a is the plane's width (x of grid_sample), b its height.
MODES: tuple[tuple[tuple[int, int], int], ...] = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


@dataclass
class TensoRFConfig:
    """Architecture of the VM field (the authors' values are the defaults)."""

    density_components: tuple[int, int, int] = (16, 4, 4)
    """Plane-line pairs per mode (XY-Z, XZ-Y, YZ-X) for density (n_lamb_sigma)."""
    appearance_components: tuple[int, int, int] = (48, 12, 12)
    """Plane-line pairs per mode for appearance (n_lamb_sh)."""
    appearance_dim: int = 27
    """Size of the appearance feature a(x) produced by the basis matrix (data_dim_color)."""
    mlp_width: int = 128
    """Hidden width of the shading MLP (featureC)."""
    distance_scale: float = 25.0
    """Factor on sigma * delta when densities become opacities."""
    init_std: float = 0.1
    """Standard deviation of the N(0, std^2) initialisation of planes and lines."""


def _init_linear(layer: nn.Linear, generator: torch.Generator, zero_bias: bool = False) -> None:
    """PyTorch's default Linear initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_(torch.zeros_like(layer.bias) if zero_bias
                             else (torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)


def _grid_params(components: tuple[int, int, int], reso: tuple[int, int, int], std: float,
                 generator: torch.Generator) -> tuple[nn.ParameterList, nn.ParameterList]:
    planes, lines = [], []
    for (comp, ((a, b), c)) in zip(components, MODES):
        planes.append(nn.Parameter(std * torch.randn((1, comp, reso[b], reso[a]), generator=generator)))
        lines.append(nn.Parameter(std * torch.randn((1, comp, reso[c], 1), generator=generator)))
    return nn.ParameterList(planes), nn.ParameterList(lines)


class _WeightedGather(torch.autograd.Function):
    """out[m] = sum_k weight[m, k] * table[index[m, k]] for table [N, R], index/weight [M, K] -> [M, R].

    Forward is ``embedding_bag``; the backward scatters with ``index_add`` (about 3x faster on CPU than
    embedding_bag's sort-based backward). Only ``table`` receives a gradient (sample positions are
    constants in every use here).
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, weight)
        ctx.n_rows = table.shape[0]
        return nnf.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        index, weight = ctx.saved_tensors
        r = grad_out.shape[1]
        contrib = (grad_out[:, None, :] * weight[:, :, None]).reshape(-1, r)
        grad_table = grad_out.new_zeros(ctx.n_rows, r).index_add_(0, index.reshape(-1), contrib)
        return grad_table, None, None


class _ChannelGather(torch.autograd.Function):
    """The same weighted gather on a channel-major table [R, N]: out[m, r] = sum_k weight[m, k] *
    table[r, index[m, k]] -> [M, R]. The gradient is scattered straight into the [R, N] layout, so
    nothing of the table's size is transposed in either direction."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, weight)
        ctx.n_cols = table.shape[1]
        taps = table.index_select(1, index.reshape(-1)).view(table.shape[0], *index.shape)   # [R, M, K]
        return (taps * weight).sum(-1).t()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        index, weight = ctx.saved_tensors
        r = grad_out.shape[1]
        contrib = (grad_out.t()[:, :, None] * weight).reshape(r, -1)
        grad_table = grad_out.new_zeros(r, ctx.n_cols).index_add_(1, index.reshape(-1), contrib)
        return grad_table, None, None


def sample_plane(plane: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of plane [1, R, H, W] at uv [M, 2] in [-1, 1] (u along W) -> [M, R].

    Same values as ``grid_sample(plane, uv, align_corners=True)`` inside [-1, 1] (outside, the border
    value is used). Implemented as a weighted 4-tap gather, several times faster than ``grid_sample``
    on CPU, above all in the backward pass. When the 4M taps outnumber the plane's H*W cells (stage-1
    batches) it gathers contiguous R-vectors from the plane transposed to [H*W, R]; when they are
    sparse on the plane (a 1024-ray batch on an 806^2 plane) it gathers from the plane's own [R, H*W]
    layout, so that neither pass transposes the whole plane.
    """
    _, r, h, w = plane.shape
    size = uv.new_tensor([w - 1, h - 1])
    pos = torch.minimum(((uv + 1) * 0.5 * size).clamp(min=0), size)
    lo = torch.minimum(pos.floor(), (size - 1).clamp(min=0))
    frac = pos - lo
    lo = lo.long()
    i00 = lo[:, 1] * w + lo[:, 0]
    dx = 1 if w > 1 else 0
    dy = w if h > 1 else 0
    fx, fy = frac[:, 0], frac[:, 1]
    index = torch.stack([i00, i00 + dx, i00 + dy, i00 + dy + dx], dim=1)
    weight = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    if index.numel() < h * w:
        return _ChannelGather.apply(plane.reshape(r, h * w), index, weight)
    # squeeze (a view) rather than plane[0]: the backward of an index select zero-fills a plane-sized tensor.
    table = plane.squeeze(0).permute(1, 2, 0).reshape(h * w, r)
    return _WeightedGather.apply(table, index, weight)


def sample_line(line: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Linear lookup of line [1, R, G, 1] at w [M] in [-1, 1] -> [M, R] (align_corners=True convention,
    border value outside), as a 2-tap weighted gather."""
    g = line.shape[2]
    table = line[0, :, :, 0].t()
    pos = ((w + 1) * 0.5 * (g - 1)).clamp(0, g - 1)
    lo = pos.floor().clamp(max=max(g - 2, 0))
    frac = pos - lo
    lo = lo.long()
    index = torch.stack([lo, (lo + 1).clamp(max=g - 1)], dim=1)
    weight = torch.stack([1 - frac, frac], dim=1)
    return _WeightedGather.apply(table, index, weight)


def plane_tv(plane: torch.Tensor) -> torch.Tensor:
    """Total variation of a plane [1, C, H, W]:
    2 * (sum(vertical diffs^2) / (C (H-1) W) + sum(horizontal diffs^2) / (C H (W-1)))."""
    _, c, h, w = plane.shape
    dv = (plane[:, :, 1:, :] - plane[:, :, :-1, :]).pow(2).sum() / max(c * (h - 1) * w, 1)
    dh = (plane[:, :, :, 1:] - plane[:, :, :, :-1]).pow(2).sum() / max(c * h * (w - 1), 1)
    return 2 * (dv + dh)


class TensoRF(nn.Module):
    """VM-decomposed radiance field over an axis-aligned box.

    Args:
        box: [2, 3] (min, max) corners in world (NDC) coordinates.
        reso: grid nodes per axis (x, y, z).
        config: architecture.
        generator: seeds every initial value (planes, lines, basis, MLP).
    """

    def __init__(self, box: torch.Tensor, reso: tuple[int, int, int], config: TensoRFConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config or TensoRFConfig()
        generator = generator or torch.Generator().manual_seed(0)
        cfg = self.config
        self.register_buffer("box", torch.as_tensor(box, dtype=torch.float32).clone().reshape(2, 3))
        self.reso = tuple(int(r) for r in reso)
        self.density_planes, self.density_lines = _grid_params(cfg.density_components, self.reso, cfg.init_std,
                                                               generator)
        self.appearance_planes, self.appearance_lines = _grid_params(cfg.appearance_components, self.reso,
                                                                     cfg.init_std, generator)
        self.basis = nn.Linear(sum(cfg.appearance_components), cfg.appearance_dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(cfg.appearance_dim + 3, cfg.mlp_width), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_width, cfg.mlp_width), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_width, 3))
        _init_linear(self.basis, generator)
        for i, layer in enumerate(m for m in self.mlp if isinstance(m, nn.Linear)):
            _init_linear(layer, generator, zero_bias=(i == 2))
        self.occupancy = None  # set by the trainer / loader: ovs3d.field.occupancy.OccupancyGrid

    # ----------------------------------------------------------------------------------------- geometry
    @property
    def box_size(self) -> torch.Tensor:
        return self.box[1] - self.box[0]

    @property
    def units(self) -> torch.Tensor:
        """[3] world distance between neighbouring grid nodes per axis: size / (G - 1)."""
        return self.box_size / (torch.tensor(self.reso, dtype=self.box.dtype, device=self.box.device) - 1)

    def normalize(self, xyz_world: torch.Tensor) -> torch.Tensor:
        """World points [..., 3] -> normalised box coordinates in [-1, 1] (outside the box: beyond)."""
        return (xyz_world - self.box[0]) / self.box_size * 2 - 1

    def dense_points(self, reso: tuple[int, int, int] | None = None) -> torch.Tensor:
        """World positions of the nodes of a grid over the box (default: the field's own), [Gz, Gy, Gx, 3]."""
        reso = reso or self.reso
        axes = [torch.linspace(float(self.box[0, i]), float(self.box[1, i]), reso[i], device=self.box.device)
                for i in range(3)]
        z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return torch.stack([x, y, z], dim=-1)

    # ----------------------------------------------------------------------------------------- queries
    @staticmethod
    def _products(planes: nn.ParameterList, lines: nn.ParameterList, xyz: torch.Tensor) -> list[torch.Tensor]:
        """Per mode, the products P_kr(x_ab) L_kr(x_c), each [M, R_k]."""
        out = []
        for plane, line, ((a, b), c) in zip(planes, lines, MODES):
            out.append(sample_plane(plane, xyz[:, [a, b]]) * sample_line(line, xyz[:, c]))
        return out

    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        """Volume density sigma = ReLU(sum of density plane-line products) at xyz [M, 3] (normalised) -> [M]."""
        if xyz.shape[0] == 0:
            return xyz.new_zeros(0)
        feature = sum(p.sum(-1) for p in self._products(self.density_planes, self.density_lines, xyz))
        return torch.relu(feature)

    def appearance_feature(self, xyz: torch.Tensor) -> torch.Tensor:
        """The 27-d appearance feature a(x) = B [products] at xyz [M, 3] (normalised) -> [M, 27]."""
        if xyz.shape[0] == 0:
            return xyz.new_zeros(0, self.config.appearance_dim)
        return self.basis(torch.cat(self._products(self.appearance_planes, self.appearance_lines, xyz), dim=-1))

    def shade(self, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        """Colour sigmoid(MLP([a, d])) from features [M, 27] and unit view directions [M, 3] -> rgb [M, 3]."""
        return torch.sigmoid(self.mlp(torch.cat([features, viewdirs], dim=-1)))

    # ----------------------------------------------------------------------------------------- training
    def tv_density(self) -> torch.Tensor:
        """sum of ``plane_tv`` over the density planes (lines get none)."""
        return sum(plane_tv(p) for p in self.density_planes)

    def tv_appearance(self) -> torch.Tensor:
        """sum of ``plane_tv`` over the appearance planes."""
        return sum(plane_tv(p) for p in self.appearance_planes)

    def parameter_groups(self, lr_grid: float, lr_network: float) -> list[dict]:
        """Optimiser groups: named ``grids`` (planes and lines, lr_grid) and ``network`` (basis + MLP, lr_network)."""
        grids = [*self.density_planes, *self.density_lines, *self.appearance_planes, *self.appearance_lines]
        network = [*self.basis.parameters(), *self.mlp.parameters()]
        return [{"name": "grids", "params": grids, "lr": lr_grid},
                {"name": "network", "params": network, "lr": lr_network}]

    def _replace_grids(self, fn) -> None:
        """Replace every plane and line by ``fn(tensor, (a, b) or None, c_or_axes)`` (new Parameters)."""
        for planes, lines in ((self.density_planes, self.density_lines),
                              (self.appearance_planes, self.appearance_lines)):
            for k, ((a, b), c) in enumerate(MODES):
                planes[k] = nn.Parameter(fn(planes[k].data, (b, a)))
                lines[k] = nn.Parameter(fn(lines[k].data, (c, None)))

    @torch.no_grad()
    def upsample(self, reso: tuple[int, int, int]) -> None:
        """Resize every plane and line to the grid ``reso`` by (bi)linear interpolation (align_corners)."""
        reso = tuple(int(r) for r in reso)

        def resize(t: torch.Tensor, axes: tuple[int, int | None]) -> torch.Tensor:
            h = reso[axes[0]]
            w = reso[axes[1]] if axes[1] is not None else 1
            return nnf.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)

        self._replace_grids(resize)
        self.reso = reso

    @torch.no_grad()
    def shrink(self, box: torch.Tensor) -> None:
        """Crop planes and lines to the grid nodes covering ``box`` [2, 3] (world).

        Index range per axis: lo = floor((box_min - old_min) / unit), hi = ceil((box_max - old_min) / unit),
        clamped to the grid. The new box is snapped to those nodes (old_min + lo * unit .. old_min + hi * unit),
        so the field's values at every point of the new box are unchanged.
        """
        units = self.units
        lo = torch.floor((box[0].to(self.box) - self.box[0]) / units + 1e-5).long().clamp(min=0)
        hi = torch.ceil((box[1].to(self.box) - self.box[0]) / units - 1e-5).long()
        hi = torch.minimum(hi, torch.tensor(self.reso, device=hi.device) - 1)
        hi = torch.maximum(hi, lo + 1)
        lo_l, hi_l = lo.tolist(), hi.tolist()

        def crop(t: torch.Tensor, axes: tuple[int, int | None]) -> torch.Tensor:
            rows = slice(lo_l[axes[0]], hi_l[axes[0]] + 1)
            cols = slice(lo_l[axes[1]], hi_l[axes[1]] + 1) if axes[1] is not None else slice(None)
            return t[:, :, rows, cols].contiguous()

        self._replace_grids(crop)
        new_box = torch.stack([self.box[0] + lo.to(units) * units, self.box[0] + hi.to(units) * units])
        self.box.copy_(new_box)
        self.reso = tuple(h - l + 1 for l, h in zip(lo_l, hi_l))

    def arch(self) -> dict:
        """Plain description for checkpoints: reso, box and the architecture config."""
        cfg = self.config
        return {"reso": list(self.reso), "box": self.box.tolist(),
                "density_components": list(cfg.density_components),
                "appearance_components": list(cfg.appearance_components),
                "appearance_dim": cfg.appearance_dim, "mlp_width": cfg.mlp_width,
                "distance_scale": cfg.distance_scale, "init_std": cfg.init_std}

    @classmethod
    def from_arch(cls, arch: dict) -> "TensoRF":
        """An (uninitialised-valued) field with the shapes described by ``arch`` (see ``arch``)."""
        cfg = TensoRFConfig(tuple(arch["density_components"]), tuple(arch["appearance_components"]),
                            int(arch["appearance_dim"]), int(arch["mlp_width"]), float(arch["distance_scale"]),
                            float(arch["init_std"]))
        return cls(torch.tensor(arch["box"]), tuple(arch["reso"]), cfg)
