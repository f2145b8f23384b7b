"""The instant semantic model: CLIP-space features lifted onto a sparse grid without training.

A ``LiftedField`` is a radiance field (``field``, whose density places the samples, as in every stage 2)
plus a node grid aligned with the field's box: G = (Gx, Gy, Gz) nodes per axis over the unit cube
[-1, 1]^3, node (i, j, k) at -1 + 2 (i, j, k) / (G - 1) (the ``grid_sample(align_corners=True)``
convention of the field's own grids). Only the K nodes that received rendering weight in the lifting
sweep (``train/lift.py``) hold values; ``node_row`` [Gz Gy Gx] maps a flat node index to its row in

    features  [K, D] float16   unit lifted feature f_n (the scale-selected mean, see train/lift.py)
    selection [K, S] float32   scale weights s_n, rows summing to 1
    node_weight [K]            the accumulated rendering weight W_n of the sweep (its coverage)

(-1 for an empty node). A point x reads the trilinear interpolation over its cell's 8 corners c with
weights b_c(x) (sum_c b_c = 1); empty corners contribute nothing. Rendering packed samples (x_i, w_i)
of a ray is then one weighted gather, never an [M, D] buffer:

    F = sum_i w_i sum_c b_c(x_i) f_c                          [n_rays, D]
    S = sum_i w_i sum_c b_c(x_i) s_c / sum_i w_i sum_c b_c(x_i)   [n_rays, S] (uniform where nothing is lifted)

The lifting sweep uses the same corners and weights: it scatters with the adjoint of this lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
from torch import nn

from ovs3d.field.base import RadianceField, composite
from ovs3d.field.vm import trilinear_corners

@dataclass
class LiftedConfig:
    """Architecture of the instant (lifted) semantic model."""

    mode: str = "instant"
    """Always ``instant`` (how ``load_run`` tells it from the trained modes)."""
    reso: tuple[int, int, int] = (64, 64, 64)
    """Nodes per axis (x, y, z) of the semantic grid over the field's box."""
    feature_dim: int = 512
    """Size of the CLIP embedding space."""
    n_scales: int = 3
    """Number of CLIP scales the selection weighs."""


def grid_resolution(field_reso: tuple[int, int, int], max_nodes: int) -> tuple[int, int, int]:
    """(x, y, z) nodes of a semantic grid over a field with ``field_reso`` nodes: the field's grid scaled
    down uniformly so that no axis exceeds ``max_nodes`` (never up, at least 2 per axis)."""
    reso = torch.tensor(field_reso, dtype=torch.float64)
    scale = min(1.0, max_nodes / float(reso.max()))
    return tuple(int(max(2, round(float(r) * scale))) for r in reso)


def row_nodes(node_row: torch.Tensor) -> torch.Tensor:
    """The inverse of a node -> row map: the flat node index [K] of every row 0..K-1, from ``node_row``
    [G] (a row per node, -1 for nodes without one)."""
    held = (node_row >= 0).nonzero().squeeze(1)
    nodes = torch.empty_like(held)
    nodes[node_row[held].long()] = held
    return nodes


def node_positions(flat: torch.Tensor, reso: tuple[int, int, int]) -> torch.Tensor:
    """Unit coordinates [K, 3] of flat node indices [K] of a grid with ``reso`` (x, y, z) nodes."""
    gx, gy, gz = reso
    ijk = torch.stack([flat % gx, (flat // gx) % gy, flat // (gx * gy)], dim=-1).float()
    dims = torch.tensor(reso, dtype=torch.float32, device=flat.device)
    return ijk / (dims - 1) * 2 - 1


class LiftedField(nn.Module):
    """Lifted features and scale weights on a sparse node grid over a stage-1 radiance field.

    Args:
        field: the stage-1 field (frozen; it places the samples and shades RGB).
        config: grid resolution and sizes.
        n_classes: C, the rows of ``class_text`` [C, D] (unit text embeddings of the class prompts).
        n_nodes: K, the nodes that hold a value (the rows of ``features``, ``selection``, ``node_weight``).
    """

    def __init__(self, field: RadianceField, config: LiftedConfig | None = None, n_classes: int = 0,
                 n_nodes: int = 0) -> None:
        super().__init__()
        self.config = config or LiftedConfig()
        cfg = self.config
        self.field = field
        gx, gy, gz = cfg.reso
        self.register_buffer("node_row", torch.full((gz * gy * gx,), -1, dtype=torch.int32))
        self.register_buffer("features", torch.zeros(n_nodes, cfg.feature_dim, dtype=torch.float16))
        self.register_buffer("selection", torch.zeros(n_nodes, cfg.n_scales))
        self.register_buffer("node_weight", torch.zeros(n_nodes))
        self.register_buffer("class_text", torch.zeros(n_classes, cfg.feature_dim))
        for p in field.parameters():
            p.requires_grad_(False)

    @property
    def mode(self) -> str:
        return self.config.mode

    def set_values(self, nodes: torch.Tensor, features: torch.Tensor, selection: torch.Tensor,
                   weight: torch.Tensor) -> None:
        """Store the lifted values of flat node indices ``nodes`` [K]: features [K, D] (unit), selection
        [K, S] and accumulated weights [K]."""
        self.node_row.fill_(-1)
        self.node_row[nodes] = torch.arange(nodes.numel(), device=nodes.device, dtype=torch.int32)
        self.features = features.to(torch.float16)
        self.selection = selection.float()
        self.node_weight = weight.float()

    def _taps(self, xyz: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows [M, 8] (0 for empty corners) and tap weights w_i b_c(x_i) [M, 8] (0 for empty corners)."""
        flat, b = trilinear_corners(xyz, self.config.reso)
        rows = self.node_row[flat].long()
        taps = weights[:, None] * b * (rows >= 0)
        return rows.clamp(min=0), taps

    def _gather(self, table: torch.Tensor, rows: torch.Tensor, taps: torch.Tensor, bag_starts: torch.Tensor
                ) -> torch.Tensor:
        """sum of taps * table[rows] over each bag of consecutive samples starting at ``bag_starts``."""
        return nnf.embedding_bag(rows.reshape(-1), table, bag_starts * rows.shape[1],
                                 per_sample_weights=taps.reshape(-1).to(table.dtype), mode="sum").float()

    def point_features(self, xyz: torch.Tensor) -> torch.Tensor:
        """Lifted features at points [M, 3] (unit coordinates) -> [M, D] (not normalised; 0 where nothing
        was lifted)."""
        rows, taps = self._taps(xyz, torch.ones(xyz.shape[0], device=xyz.device))
        return self._gather(self.features, rows, taps, torch.arange(xyz.shape[0], device=xyz.device))

    def set_precision(self, precision: str) -> None:
        """Run the field's shading MLP (RGB) at ``precision``; the lookup itself has no products to speed up."""
        self.field.set_shading(precision)

    def feature_span(self) -> torch.Tensor | None:
        """No low-dimensional span: lifted features fill the CLIP space."""
        return None

    def render(self, xyz: torch.Tensor, weights: torch.Tensor, ray_index: torch.Tensor, n_rays: int,
               viewdirs: torch.Tensor | None = None, with_selection: bool = True,
               appearance: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Packed samples (sorted by ray) -> {"features": [n, D], "selection": [n, S] (if asked), "rgb": [n, 3]
        (with viewdirs [M, 3]), "acc": [n]} (module docstring); ``appearance`` is only used for RGB."""
        rows, taps = self._taps(xyz, weights)
        starts = torch.searchsorted(ray_index, torch.arange(n_rays, device=ray_index.device))
        out = {"features": self._gather(self.features, rows, taps, starts),
               "acc": weights.new_zeros(n_rays).index_add(0, ray_index, weights)}
        if with_selection:
            scores = self._gather(self.selection, rows, taps, starts)
            total = scores.sum(-1, keepdim=True)
            uniform = torch.full_like(scores, 1.0 / scores.shape[-1])
            out["selection"] = torch.where(total > 1e-12, scores / total.clamp_min(1e-12), uniform)
        if viewdirs is not None:
            a = self.field.appearance(xyz) if appearance is None else appearance
            out["rgb"] = composite(self.field.shade(a, viewdirs), weights, ray_index, n_rays)
        return out
