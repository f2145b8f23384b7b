"""The field interfaces: all that renderers, trainers and exporters know of a field.

A **radiance field** lives in a ray space (``scene/rayspace.py``) and, at points given in *unit
coordinates* x in [-1, 1]^3 of its box (``normalize`` maps grid coordinates there), answers

    density(x)         [M, 3] -> [M]      volume density sigma >= 0 (opacity of a step delta:
                                          1 - exp(-sigma * delta * distance_scale))
    appearance(x)      [M, 3] -> [M, A]   appearance feature a(x)
    shade(a, dirs)     [M, A], [M, 3] -> [M, 3] colour in [0, 1] seen along unit directions dirs

and carries ``occupancy`` (an ``OccupancyGrid`` over grid coordinates, or None) that renderers use
to skip empty space before evaluating density.

A **semantic model** is a radiance field (``field``) plus a head into CLIP space and a scale
selection; ``render`` turns packed ray samples into per-ray features F [n, D], selections S [n, S]
and optionally colours, ``point_features`` gives F at points (exports). Trained (stage 2) or lifted without training, test, query, view and export
only use it through this.
"""

from __future__ import annotations

from typing import ContextManager, Protocol, runtime_checkable

import torch

from ovs3d.field.occupancy import OccupancyGrid
from ovs3d.scene.rayspace import RaySpace


def composite(values: torch.Tensor, weights: torch.Tensor, ray_index: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Weighted per-ray sums of packed samples: out[r] = sum_{i: ray_index[i] = r} weights[i] * values[i].

    Args: values [M, D], weights [M], ray_index [M] long. Returns [n_rays, D]. (Volume rendering's
    compositing step, shared by the renderers and the semantic models.)
    """
    out = values.new_zeros(n_rays, values.shape[-1])
    return out.index_add(0, ray_index, values * weights[:, None])


def check_points(xyz: torch.Tensor, name: str = "xyz") -> None:
    """Raise ValueError naming the shape when ``xyz`` is not [M, 3]."""
    if xyz.ndim != 2 or xyz.shape[-1] != 3:
        raise ValueError(f"{name} must be [M, 3] points, got shape {tuple(xyz.shape)}")


@runtime_checkable
class RadianceField(Protocol):
    space: RaySpace
    """The ray space the field's grid coordinates belong to."""
    box: torch.Tensor
    """[2, 3] the field's current box in grid coordinates (inside ``space.box``)."""
    occupancy: OccupancyGrid | None
    """Occupied cells in grid coordinates, used to skip empty samples (None: evaluate everywhere)."""
    distance_scale: float
    """Factor on sigma * delta when densities become opacities."""
    appearance_dim: int
    """A, the width of ``appearance``."""
    reso: tuple[int, int, int]
    """Grid nodes per axis; a semantic grid over the field aligns with it."""

    def normalize(self, xyz: torch.Tensor) -> torch.Tensor:
        """Grid coordinates [..., 3] -> unit coordinates in [-1, 1]^3 over ``box``."""
        ...

    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        """[M, 3] unit coordinates -> [M] density."""
        ...

    def appearance(self, xyz: torch.Tensor) -> torch.Tensor:
        """[M, 3] unit coordinates -> [M, A] appearance features."""
        ...

    def shade(self, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        """[M, A] appearance features and [M, 3] unit view directions -> [M, 3] colour in [0, 1]."""
        ...

    def density_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters of the density (frozen in stage 2)."""
        ...

    def appearance_parameters(self) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
        """(grid parameters, network parameters) of appearance and shading (tuned in stage 2's joint phase)."""
        ...

    def frozen(self) -> ContextManager[None]:
        """A scope in which the parameters do not change: the field may answer density and appearance
        without gradients from caches built on first use (a render loop enters it once for all its views)."""
        ...


@runtime_checkable
class SemanticModel(Protocol):
    field: RadianceField
    """The radiance field whose density places the features."""

    def render(self, xyz: torch.Tensor, weights: torch.Tensor, ray_index: torch.Tensor, n_rays: int,
               viewdirs: torch.Tensor | None = None, with_selection: bool = True,
               appearance: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Packed samples (xyz [M, 3] unit coordinates, weights [M], ray_index [M]) -> per-ray
        {"features": [n, D], "selection": [n, S] (if asked), "rgb": [n, 3] (with viewdirs [M, 3]), "acc": [n]}."""
        ...

    def point_features(self, xyz: torch.Tensor) -> torch.Tensor:
        """The CLIP-space feature [M, D] (not normalised) at points xyz [M, 3] (unit coordinates)."""
        ...

    def set_precision(self, precision: str) -> None:
        """Run the model's matrix products at ``precision`` (fp32, or bf16 with fp32 accumulation)."""
        ...

    def feature_span(self) -> torch.Tensor | None:
        """[D, r] a set of vectors spanning every feature the model renders (r < D), or None."""
        ...
