"""The vector-matrix (VM) decomposition of a 3D grid (TensoRF, method spec section 3.1): one building
block for the density, the appearance and the stage-2 selection volume.

A ``VMGrid`` is a sum over three modes k of plane-line products. Mode k pairs a plane over axes (a, b)
with a line along the remaining axis c:

    mode 0: XY plane, Z line;  mode 1: XZ plane, Y line;  mode 2: YZ plane, X line.

A plane is a parameter [1, R_k, G_b, G_a] and a line [1, R_k, G_c, 1] (G = grid nodes per axis), both
looked up with the ``grid_sample(align_corners=True)`` convention at coordinates in [-1, 1], so grid
node i of an axis with G nodes sits at -1 + 2 i / (G - 1). At a point x the grid yields, per mode,

    p_k(x) = P_k(x_ab) * L_k(x_c)   in R^{R_k}     (elementwise product of the two lookups)

and ``features(x)`` concatenates them to [M, sum_k R_k]; ``total(x)`` is their sum over every
component (the density's pre-activation). Planes and lines start from N(0, std^2).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import nn

# (plane axes (a, b), line axis c) per mode; a is the plane's width (x of grid_sample), b its height.
MODES: tuple[tuple[tuple[int, int], int], ...] = (((0, 1), 2), ((0, 2), 1), ((1, 2), 0))


def init_linear(layer: nn.Linear, generator: torch.Generator, zero_bias: bool = False) -> None:
    """PyTorch's default Linear initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_((torch.rand(layer.weight.shape, generator=generator) * 2 - 1) * bound)
        if layer.bias is not None:
            layer.bias.copy_(torch.zeros_like(layer.bias) if zero_bias
                             else (torch.rand(layer.bias.shape, generator=generator) * 2 - 1) * bound)


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


def trilinear_corners(xyz: torch.Tensor, reso: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8 corner nodes of each point's cell and their trilinear weights.

    Args: xyz [M, 3] unit coordinates (clamped to [-1, 1]^3); reso (Gx, Gy, Gz).
    Returns: flat node indices [M, 8] long (z-major: (k Gy + j) Gx + i; corners ordered z, y, x with x
    fastest) and weights b [M, 8] summing to 1 (an axis with one node: its upper corners repeat the node).
    """
    gx, gy, gz = reso
    size = xyz.new_tensor([gx - 1, gy - 1, gz - 1])
    pos = (xyz.clamp(-1, 1) + 1) * 0.5 * size                                  # [M, 3] in node units
    low = torch.minimum(pos.floor(), (size - 1).clamp(min=0))                  # lower corner, inside the grid
    frac = pos - low                                                           # [M, 3] in [0, 1]
    low = low.long()
    stride = [gx * gy if gz > 1 else 0, gx if gy > 1 else 0, 1 if gx > 1 else 0]   # next node along z, y, x
    offsets = torch.tensor([[dz * stride[0] + dy * stride[1] + dx * stride[2]
                             for dz in (0, 1) for dy in (0, 1) for dx in (0, 1)]], device=xyz.device)   # [1, 8]
    flat = (low[:, 0] + gx * (low[:, 1] + gy * low[:, 2]))[:, None] + offsets                      # [M, 8]
    wx, wy, wz = (torch.stack([1 - frac[:, i], frac[:, i]], 1) for i in range(3))                 # [M, 2] each
    return flat, (wz[:, :, None, None] * wy[:, None, :, None] * wx[:, None, None, :]).reshape(-1, 8)


def sample_volume(volume: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of a dense volume [G_z, G_y, G_x, C] at xyz [M, 3] in [-1, 1] -> [M, C], with the
    conventions of ``sample_plane`` / ``sample_line`` on every axis (align_corners, border value outside).

    A mode's plane-line product P(x_ab) L(x_c) is bilinear in (x_a, x_b) times linear in x_c on the same
    nodes, i.e. the trilinear interpolation of its outer product P[b, a] L[c]; so ``features(xyz) @ W.T``
    equals this lookup of ``VMGrid.dense_projection(W)`` (one 8-tap gather instead of 3 planes and 3 lines).
    """
    gz, gy, gx, c = volume.shape
    return _WeightedGather.apply(volume.reshape(-1, c), *trilinear_corners(xyz, (gx, gy, gz)))


def plane_tv(plane: torch.Tensor) -> torch.Tensor:
    """Total variation of a plane [1, C, H, W]:
    2 * (sum(vertical diffs^2) / (C (H-1) W) + sum(horizontal diffs^2) / (C H (W-1)))."""
    _, c, h, w = plane.shape
    dv = (plane[:, :, 1:, :] - plane[:, :, :-1, :]).pow(2).sum() / max(c * (h - 1) * w, 1)
    dh = (plane[:, :, :, 1:] - plane[:, :, :, :-1]).pow(2).sum() / max(c * h * (w - 1), 1)
    return 2 * (dv + dh)


class VMGrid(nn.Module):
    """Three plane-line pairs with ``components`` = (R_0, R_1, R_2) channels over a grid of ``reso`` =
    (G_x, G_y, G_z) nodes. Initial values are drawn from ``generator``, mode by mode, plane then line."""

    def __init__(self, components: tuple[int, int, int], reso: tuple[int, int, int], std: float,
                 generator: torch.Generator) -> None:
        super().__init__()
        planes, lines = [], []
        for comp, ((a, b), c) in zip(components, MODES):
            planes.append(nn.Parameter(std * torch.randn((1, comp, reso[b], reso[a]), generator=generator)))
            lines.append(nn.Parameter(std * torch.randn((1, comp, reso[c], 1), generator=generator)))
        self.planes, self.lines = nn.ParameterList(planes), nn.ParameterList(lines)

    @property
    def n_features(self) -> int:
        """sum_k R_k, the width of ``features``."""
        return sum(p.shape[1] for p in self.planes)

    def products(self, xyz: torch.Tensor) -> list[torch.Tensor]:
        """Per mode k, p_k(x) = P_k(x_ab) * L_k(x_c) at xyz [M, 3] in [-1, 1] -> list of [M, R_k]."""
        return [sample_plane(plane, xyz[:, [a, b]]) * sample_line(line, xyz[:, c])
                for plane, line, ((a, b), c) in zip(self.planes, self.lines, MODES)]

    def features(self, xyz: torch.Tensor) -> torch.Tensor:
        """The products of every mode side by side: [M, sum_k R_k]."""
        return torch.cat(self.products(xyz), dim=-1)

    def total(self, xyz: torch.Tensor) -> torch.Tensor:
        """sum_k sum_r p_kr(x) -> [M] (summed mode by mode)."""
        return sum(p.sum(-1) for p in self.products(xyz))

    @torch.no_grad()
    def dense_projection(self, weight: torch.Tensor, out: torch.Tensor, z0: int) -> torch.Tensor:
        """``features @ weight.T`` at the grid nodes of the slab z0 <= node_z < z0 + Z, weight [C, sum_k R_k],
        written into ``out`` [Z, G_y, G_x, C]: V[z, y, x] = sum_k sum_r W[:, r_k] P_kr[node_b, node_a] L_kr[node_c],
        one matrix product per mode (K = R_k), no [nodes, sum_k R_k] buffer. ``sample_volume`` of the whole
        volume gives ``features(xyz) @ weight.T`` anywhere (weight = ones [1, sum R]: ``total``)."""
        p0, p1, p2 = (p[0] for p in self.planes)                     # [R, G_y, G_x], [R, G_z, G_x], [R, G_z, G_y]
        l0, l1, l2 = (line[0, :, :, 0] for line in self.lines)      # [R, G_z], [R, G_y], [R, G_x]
        w0, w1, w2 = weight.split([p.shape[0] for p in (p0, p1, p2)], dim=1)     # [C, R_k]
        z, gy, gx, c = out.shape
        lw0 = (l0[:, z0:z0 + z, None] * w0.t()[:, None, :]).reshape(-1, z * c)    # [R, Z C]
        out.copy_((p0.reshape(-1, gy * gx).t() @ lw0).view(gy, gx, z, c).permute(2, 0, 1, 3))
        lw1 = (l1[:, :, None] * w1.t()[:, None, :]).reshape(-1, gy * c)           # [R, G_y C]
        out.add_((p1[:, z0:z0 + z].permute(1, 2, 0) @ lw1).view(z, gx, gy, c).transpose(1, 2))
        lw2 = (l2[:, :, None] * w2.t()[:, None, :]).reshape(-1, gx * c)           # [R, G_x C]
        return out.add_((p2[:, z0:z0 + z].permute(1, 2, 0) @ lw2).view(z, gy, gx, c))

    def tv(self) -> torch.Tensor:
        """sum over the planes of ``plane_tv`` (lines get none)."""
        return sum(plane_tv(p) for p in self.planes)

    def _replace(self, fn) -> None:
        """Replace every plane and line by ``fn(tensor, (row axis, column axis or None))`` (new Parameters)."""
        for k, ((a, b), c) in enumerate(MODES):
            self.planes[k] = nn.Parameter(fn(self.planes[k].data, (b, a)))
            self.lines[k] = nn.Parameter(fn(self.lines[k].data, (c, None)))

    @torch.no_grad()
    def resample(self, reso: tuple[int, int, int]) -> None:
        """Resize every plane and line to the grid ``reso`` by (bi)linear interpolation (align_corners)."""
        def resize(t: torch.Tensor, axes: tuple[int, int | None]) -> torch.Tensor:
            w = reso[axes[1]] if axes[1] is not None else 1
            return nnf.interpolate(t, size=(reso[axes[0]], w), mode="bilinear", align_corners=True)

        self._replace(resize)

    @torch.no_grad()
    def crop(self, lo: list[int], hi: list[int]) -> None:
        """Keep grid nodes lo[i]..hi[i] (inclusive) along each axis i; values at kept nodes are unchanged."""
        def cut(t: torch.Tensor, axes: tuple[int, int | None]) -> torch.Tensor:
            rows = slice(lo[axes[0]], hi[axes[0]] + 1)
            cols = slice(lo[axes[1]], hi[axes[1]] + 1) if axes[1] is not None else slice(None)
            return t[:, :, rows, cols].contiguous()

        self._replace(cut)
