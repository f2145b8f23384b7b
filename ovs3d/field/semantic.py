"""The semantic field of stage 2 (method spec 6.1 and 6.3): a CLIP-space feature head on the 27-d
appearance feature and a 3D scale-selection volume, on top of a frozen stage-1 density. It implements
the ``SemanticModel`` interface and sees its radiance field through ``RadianceField`` only.

Both modes render from the same packed samples (ray_index [M], xyz [M, 3] normalised, weights [M]
unit coordinates, for the samples whose weight passes the threshold) and output, per ray,

    F [n_rays, 512] (not normalised),  S [n_rays, 3] (rows sum to 1),  optionally RGB [n_rays, 3].

``faithful`` (the authors'):
  * head = Linear 27->128, Linear 128->128, Linear 128->512 with no nonlinearity: an affine map
    h(a) = M a + beta. Hence F = sum_i w_i h(a_i) = M (sum_i w_i a_i) + beta * sum_i w_i: the 27-d
    appearance feature is composited first and the head applied per ray (each bias scaled by the
    ray's accumulated weight), which is exact and never forms an [M, 512] buffer.
  * selection g_i = sigmoid(Linear24->3(selVM(x_i))) in (0, 1)^3, S = softmax(sum_i w_i g_i): logits in
    [0, 1], so S_s stays within [0.155, 0.576] and cannot select a single scale (spec 9.1).

``improved`` (spec 9 items 1-3):
  * head = Linear 27->128, ReLU, Linear 128->128, ReLU, Linear 128->512: a real nonlinearity, so two
    points with the same appearance feature direction can still map to different classes after
    joint tuning, and the field is no longer confined to a 27-d affine subspace. The hidden layers
    run only at the kept samples ([M, 128]); the last layer is affine, so it is applied after
    compositing the 128-d hidden features (exact; still no [M, 512] buffer).
  * selection logits l_i = Linear24->3(selVM(x_i)) are unbounded; S = softmax(sum_i w_i l_i), so a
    ray can put nearly all weight on one scale. The trainer detaches S inside the feature loss, so S
    learns from the RDA loss alone (``SegmentConfig.feature_selection_grad``).
  * the RDA loss uses the normalised F with an explicit temperature (set in the trainer's config).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ovs3d.field.base import RadianceField, composite
from ovs3d.field.vm import VMGrid, init_linear

SemanticMode = Literal["faithful", "improved"]


@dataclass
class SemanticConfig:
    """Architecture of the stage-2 semantic field."""

    mode: SemanticMode = "faithful"
    """faithful: affine head, sigmoid scores softmaxed after rendering (the authors'); improved:
    ReLU head and unbounded selection logits (method spec section 9 items 1-3)."""
    feature_dim: int = 512
    """Size of the CLIP embedding space."""
    hidden: int = 128
    """Hidden width of the feature head."""
    selection_components: tuple[int, int, int] = (16, 4, 4)
    """Plane-line pairs per mode of the selection volume (the density's counts)."""
    n_scales: int = 3
    """Number of CLIP scales the selection chooses among."""
    init_std: float = 0.1
    """Standard deviation of the N(0, std^2) initialisation of the selection planes and lines."""


class SemanticField(nn.Module):
    """Feature head + selection volume over a stage-1 radiance field (whose density stays frozen).

    Args:
        field: the stage-1 field; the selection volume has its grid size and box.
        config: architecture (mode).
        generator: seeds every initial value.
        n_classes: C, the rows of ``class_text`` [C, D], the unit text embeddings of the class prompts
            the model is trained with (a buffer, saved with the model; set by the trainer).
    """

    def __init__(self, field: RadianceField, config: SemanticConfig | None = None,
                 generator: torch.Generator | None = None, n_classes: int = 0) -> None:
        super().__init__()
        self.config = config or SemanticConfig()
        cfg = self.config
        generator = generator or torch.Generator().manual_seed(0)
        self.field = field
        dim_in = field.appearance_dim
        self.head = nn.ModuleList([nn.Linear(dim_in, cfg.hidden), nn.Linear(cfg.hidden, cfg.hidden),
                                   nn.Linear(cfg.hidden, cfg.feature_dim)])
        for layer in self.head:
            init_linear(layer, generator)
        self.selection_grid = VMGrid(cfg.selection_components, field.reso, cfg.init_std, generator)
        self.select_basis = nn.Linear(sum(cfg.selection_components), cfg.n_scales)
        init_linear(self.select_basis, generator)
        self.register_buffer("class_text", torch.zeros(n_classes, cfg.feature_dim))
        for p in field.density_parameters():
            p.requires_grad_(False)
        self.set_appearance_trainable(False)
        self.head_precision = "fp32"

    def set_precision(self, precision: str) -> None:
        """Run the head's hidden layers and the field's shading MLP at ``precision`` (fp32, or bf16: bf16
        products accumulated in fp32, the hidden features turned back to fp32 before compositing)."""
        self.head_precision = precision
        self.field.set_shading(precision)

    @property
    def mode(self) -> SemanticMode:
        return self.config.mode

    def set_appearance_trainable(self, trainable: bool) -> None:
        """Freeze (before joint_start_iter) or unfreeze (joint mode) the appearance planes, lines, basis
        and shading MLP. The density is never trained in stage 2."""
        grids, network = self.field.appearance_parameters()
        for p in grids + network:
            p.requires_grad_(trainable)

    def selection_logits(self, xyz: torch.Tensor) -> torch.Tensor:
        """Per-point scale scores [M, 3] at normalised xyz [M, 3]: sigmoid of the basis output (faithful)
        or the raw, unbounded basis output (improved)."""
        logits = self.select_basis(self.selection_grid.features(xyz))
        return torch.sigmoid(logits) if self.mode == "faithful" else logits

    def _head_hidden(self, a: torch.Tensor) -> torch.Tensor:
        """The head up to (excluding) its last layer; ReLU between layers in improved mode (fp32 out)."""
        h = a
        context = (torch.autocast(a.device.type, dtype=torch.bfloat16) if self.head_precision == "bf16"
                   else contextlib.nullcontext())
        with context:
            for layer in self.head[:-1]:
                h = layer(h)
                if self.mode == "improved":
                    h = torch.relu(h)
        return h.float()

    def feature_of_points(self, a: torch.Tensor) -> torch.Tensor:
        """The head applied per point: a [M, 27] -> [M, 512] (for inspection and tests; rendering
        never forms this)."""
        return self.head[-1](self._head_hidden(a))

    def point_features(self, xyz: torch.Tensor) -> torch.Tensor:
        """The head at points xyz [M, 3] (unit coordinates) -> [M, 512]."""
        return self.feature_of_points(self.field.appearance(xyz))

    def feature_span(self) -> torch.Tensor:
        """[D, hidden + 1] = [W, b] of the last (affine) head layer: every rendered F lies in its span."""
        last = self.head[-1]
        return torch.cat([last.weight, last.bias[:, None]], dim=1)

    def render(self, xyz: torch.Tensor, weights: torch.Tensor, ray_index: torch.Tensor, n_rays: int,
               viewdirs: torch.Tensor | None = None, with_selection: bool = True,
               appearance: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render packed samples to per-ray outputs.

        Args:
            xyz: [M, 3] normalised box coordinates of the kept samples.
            weights: [M] their volume-rendering weights w_i; ray_index: [M] their ray.
            viewdirs: [M, 3] unit view directions; when given, RGB is rendered too.
            with_selection: render S (skip it when only F is needed, e.g. DINO patches, inference).
            appearance: [M, 27] the samples' appearance features when already looked up (else computed).
        Returns:
            {"features": [n_rays, 512], "selection": [n_rays, 3] (if asked), "rgb": [n_rays, 3] (if
            viewdirs), "acc": [n_rays] accumulated weight}.
        """
        a = self.field.appearance(xyz) if appearance is None else appearance  # [M, 27]
        acc = weights.new_zeros(n_rays).index_add(0, ray_index, weights)[:, None]  # [n, 1]
        if self.mode == "faithful":
            # affine head: composite a first, then apply each layer with its bias scaled by acc
            h = composite(a, weights, ray_index, n_rays)
            for layer in self.head:
                h = h @ layer.weight.t() + acc * layer.bias
        else:
            hidden = composite(self._head_hidden(a), weights, ray_index, n_rays)
            h = hidden @ self.head[-1].weight.t() + acc * self.head[-1].bias
        out = {"features": h, "acc": acc[:, 0]}
        if with_selection:
            scores = composite(self.selection_logits(xyz), weights, ray_index, n_rays)
            out["selection"] = torch.softmax(scores, dim=-1)
        if viewdirs is not None:
            out["rgb"] = composite(self.field.shade(a, viewdirs), weights, ray_index, n_rays)
        return out

    def parameter_groups(self, lr_grid: float, lr_network: float, joint: bool,
                         lr_app_grid: float = 5e-3, lr_app_network: float = 5e-5) -> list[dict]:
        """Optimiser groups (spec 6.6): head (lr_network), selection planes+lines (lr_grid), selection
        basis (lr_network); in joint mode also the appearance grids (lr_app_grid), basis and shading
        MLP (lr_app_network)."""
        groups = [{"name": "head", "params": list(self.head.parameters()), "lr": lr_network},
                  {"name": "select_grids", "params": [*self.selection_grid.planes, *self.selection_grid.lines],
                   "lr": lr_grid},
                  {"name": "select_basis", "params": list(self.select_basis.parameters()), "lr": lr_network}]
        if joint:
            app_grids, app_network = self.field.appearance_parameters()
            groups += [{"name": "app_grids", "params": app_grids, "lr": lr_app_grid},
                       {"name": "app_network", "params": app_network, "lr": lr_app_network}]
        return groups
