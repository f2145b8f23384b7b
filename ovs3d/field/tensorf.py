"""TensoRF radiance field with the vector-matrix (VM) decomposition (method spec section 3.1), an
implementation of the ``RadianceField`` interface (``field/base.py``).

Density and appearance are each one ``VMGrid`` (``field/vm.py``), R = (16, 4, 4) and (48, 12, 12)
plane-line pairs per mode:

    density:     sigma(x) = ReLU( sum_k sum_r P_kr(x_ab) L_kr(x_c) )                      scalar
    appearance:  a(x) = B [ P_kr(x_ab) L_kr(x_c) ]_(k,r)    B: Linear(sum R_k -> 27, no bias)
    colour:      c(x, d) = sigmoid(MLP([a(x), d]))           MLP: 30 -> 128 -> 128 -> 3, ReLU between

with d the unit view direction (in the ray space's coordinates, NDC for forward-facing scenes).

The field lives in a ray space (``scene/rayspace.py``) and starts on its box; ``box`` is the field's
current box in grid coordinates (it shrinks to the occupied region once), ``normalize`` maps grid
coordinates to the unit coordinates [-1, 1]^3 that ``density`` / ``appearance`` take.
``distance_scale`` (25) multiplies densities when they are turned into opacities
(``render/volume.py``). The occupancy grid (``field/occupancy.py``) rides along as ``field.occupancy``
so renderers and checkpoints find it with the field.
"""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from ovs3d.field.base import check_points
from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.field.shading import Shader, make_shader
from ovs3d.field.vm import VMGrid, init_linear, sample_volume
from ovs3d.scene.rayspace import RaySpace


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



DENSE_MAX_BYTES = 2 ** 31
"""Largest volume (bytes, fp32) ``TensoRF.dense_volume`` materialises: 2 GiB, the appearance of a 256^3 grid
(the paper's 640^3 keeps appearance on its planes and lines; its density volume, 1 GiB, is built)."""
DENSE_SLAB_NODES = 2 ** 18
"""Grid nodes per slab while a dense volume is built: a slab's per-mode products stay in cache."""
_DENSE_BUILD = threading.Lock()


class TensoRF(nn.Module):
    """VM-decomposed radiance field over an axis-aligned box of its ray space.

    Args:
        space: the ray space; the field starts on its box.
        reso: grid nodes per axis (x, y, z).
        config: architecture.
        generator: seeds every initial value (density grid, appearance grid, basis, MLP, in that order).
    """

    def __init__(self, space: RaySpace, reso: tuple[int, int, int], config: TensoRFConfig | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config or TensoRFConfig()
        generator = generator or torch.Generator().manual_seed(0)
        cfg = self.config
        self.space = space
        self.register_buffer("box", space.box_tensor())
        self.reso = tuple(int(r) for r in reso)
        self.density_grid = VMGrid(cfg.density_components, self.reso, cfg.init_std, generator)
        self.appearance_grid = VMGrid(cfg.appearance_components, self.reso, cfg.init_std, generator)
        self.basis = nn.Linear(sum(cfg.appearance_components), cfg.appearance_dim, bias=False)
        self.mlp = nn.Sequential(nn.Linear(cfg.appearance_dim + 3, cfg.mlp_width), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_width, cfg.mlp_width), nn.ReLU(inplace=True),
                                 nn.Linear(cfg.mlp_width, 3))
        init_linear(self.basis, generator)
        for i, layer in enumerate(m for m in self.mlp if isinstance(m, nn.Linear)):
            init_linear(layer, generator, zero_bias=(i == 2))
        self.occupancy: OccupancyGrid | None = None   # set by the trainer / loader
        self.shader: Shader = make_shader()     # fp32 eager; ``set_shading`` picks a fast path
        self._dense: dict[str, tuple[tuple, torch.Tensor]] | None = None   # inside ``frozen``: name -> (key, volume)

    @property
    def distance_scale(self) -> float:
        return self.config.distance_scale

    @property
    def appearance_dim(self) -> int:
        return self.config.appearance_dim

    # ----------------------------------------------------------------------------------------- geometry
    @property
    def box_size(self) -> torch.Tensor:
        return self.box[1] - self.box[0]

    @property
    def units(self) -> torch.Tensor:
        """[3] distance between neighbouring grid nodes per axis: size / (G - 1)."""
        return self.box_size / (torch.tensor(self.reso, dtype=self.box.dtype, device=self.box.device) - 1)

    def normalize(self, xyz: torch.Tensor) -> torch.Tensor:
        """Grid coordinates [..., 3] -> unit coordinates in [-1, 1] over the box (outside the box: beyond)."""
        return (xyz - self.box[0]) / self.box_size * 2 - 1

    def dense_points(self, reso: tuple[int, int, int] | None = None) -> torch.Tensor:
        """Grid-coordinate positions of the nodes of a grid over the box (default: the field's own), [Gz, Gy, Gx, 3]."""
        reso = reso or self.reso
        axes = [torch.linspace(float(self.box[0, i]), float(self.box[1, i]), reso[i], device=self.box.device)
                for i in range(3)]
        z, y, x = torch.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
        return torch.stack([x, y, z], dim=-1)

    # ----------------------------------------------------------------------------------------- queries
    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        """Volume density sigma = ReLU(sum of density plane-line products) at xyz [M, 3] (unit) -> [M]."""
        check_points(xyz)
        if xyz.shape[0] == 0:
            return xyz.new_zeros(0)
        volume = self.dense_volume("density")
        if volume is None:
            return torch.relu(self.density_grid.total(xyz))
        return torch.relu(sample_volume(volume, xyz)[:, 0])

    def appearance(self, xyz: torch.Tensor) -> torch.Tensor:
        """The 27-d appearance feature a(x) = B [products] at xyz [M, 3] (unit) -> [M, 27]."""
        check_points(xyz)
        if xyz.shape[0] == 0:
            return xyz.new_zeros(0, self.config.appearance_dim)
        volume = self.dense_volume("appearance")
        if volume is None:
            return self.basis(self.appearance_grid.features(xyz))
        return sample_volume(volume, xyz)

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """Within: the parameters do not change (rendering a run, evaluating between training steps), so
        density and appearance without gradients are trilinear lookups of dense per-node volumes, built on
        first use and dropped on exit (``dense_volume``). Nested uses share the outer one's volumes."""
        if self._dense is not None:
            yield
            return
        self._dense = {}
        try:
            yield
        finally:
            self._dense = None

    def dense_volume(self, name: str) -> torch.Tensor | None:
        """The field's ``density`` pre-activation [G_z, G_y, G_x, 1] or ``appearance`` feature [G_z, G_y, G_x, 27]
        at every grid node; None (use the planes and lines) outside ``frozen``, with gradients on, or above
        ``DENSE_MAX_BYTES``. Parameters must not change inside ``frozen`` (a fused optimiser step does not
        bump their versions); a replaced one (upsampling, shrinking) or a bumped version is noticed and rebuilt.

        A plane-line product is trilinear on the grid's nodes and the basis B is linear, so ``sample_volume``
        of these gives the values the planes and lines give, with one 8-tap gather per point instead of three
        planes, three lines and B (about 4x faster for density, 8x for appearance). Building the appearance
        volume takes about 0.2 s at 128^3 and 1.7 s at 256^3 on two cores (``VMGrid.dense_projection``).
        """
        cache = self._dense                       # read once: another thread may leave the scope meanwhile
        if cache is None or torch.is_grad_enabled():      # training's path: nothing else to check
            return None
        width = 1 if name == "density" else self.appearance_dim
        if math.prod(self.reso) * width * 4 > DENSE_MAX_BYTES:
            return None
        grid = self.density_grid if name == "density" else self.appearance_grid
        params = [*grid.parameters()] + ([] if name == "density" else [self.basis.weight])
        key = tuple((p.data_ptr(), p._version, tuple(p.shape)) for p in params)
        with _DENSE_BUILD, torch.no_grad():       # viewer threads: one build, the others wait for it
            cached = cache.get(name)
            if cached is None or cached[0] != key:
                cache.pop(name, None)
                weight = params[0].new_ones(1, grid.n_features) if name == "density" else self.basis.weight
                gx, gy, gz = self.reso
                volume = params[0].new_empty(gz, gy, gx, width)
                slab = max(1, DENSE_SLAB_NODES // (gx * gy))              # z layers per slab
                for z in range(0, gz, slab):
                    grid.dense_projection(weight, volume[z:z + slab], z)
                cached = cache[name] = (key, volume)
        return cached[1]

    def shade(self, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        """Colour sigmoid(MLP([a, d])) from features [M, 27] and unit view directions [M, 3] -> rgb [M, 3]
        (fp32; the products at the precision ``set_shading`` chose, fp32 by default)."""
        return self.shader(self.mlp, features, viewdirs)

    def set_shading(self, precision: str = "fp32", compile: bool = False, log: Callable[[str], None] = print) -> None:
        """Run the shading MLP at ``precision`` (fp32 or bf16: bf16 products, fp32 accumulation, weights and
        output), through ``torch.compile`` when ``compile`` (eager when no compiler works); ``field/shading.py``."""
        self.shader = make_shader(precision, compile, log)

    # ----------------------------------------------------------------------------------------- training
    def tv_density(self) -> torch.Tensor:
        """Total variation of the density planes (lines get none)."""
        return self.density_grid.tv()

    def tv_appearance(self) -> torch.Tensor:
        """Total variation of the appearance planes."""
        return self.appearance_grid.tv()

    def density_parameters(self) -> list[nn.Parameter]:
        """The density planes and lines."""
        return [*self.density_grid.planes, *self.density_grid.lines]

    def appearance_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(appearance planes and lines, basis + shading MLP)."""
        return ([*self.appearance_grid.planes, *self.appearance_grid.lines],
                [*self.basis.parameters(), *self.mlp.parameters()])

    def parameter_groups(self, lr_grid: float, lr_network: float) -> list[dict]:
        """Optimiser groups: named ``grids`` (planes and lines, lr_grid) and ``network`` (basis + MLP, lr_network)."""
        grids, network = self.appearance_parameters()
        return [{"name": "grids", "params": self.density_parameters() + grids, "lr": lr_grid},
                {"name": "network", "params": network, "lr": lr_network}]

    @torch.no_grad()
    def upsample(self, reso: tuple[int, int, int]) -> None:
        """Resize every plane and line to the grid ``reso`` by (bi)linear interpolation (align_corners)."""
        reso = tuple(int(r) for r in reso)
        self.density_grid.resample(reso)
        self.appearance_grid.resample(reso)
        self.reso = reso

    @torch.no_grad()
    def shrink(self, box: torch.Tensor) -> None:
        """Crop planes and lines to the grid nodes covering ``box`` [2, 3] (grid coordinates).

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
        self.density_grid.crop(lo_l, hi_l)
        self.appearance_grid.crop(lo_l, hi_l)
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
    def from_arch(cls, arch: dict, space: RaySpace) -> "TensoRF":
        """An (uninitialised-valued) field in ``space`` with the shapes and box described by ``arch``."""
        cfg = TensoRFConfig(tuple(arch["density_components"]), tuple(arch["appearance_components"]),
                            int(arch["appearance_dim"]), int(arch["mlp_width"]), float(arch["distance_scale"]),
                            float(arch["init_std"]))
        field = cls(space, tuple(arch["reso"]), cfg)
        field.box.copy_(torch.tensor(arch["box"]))
        return field
