"""Renderer: analytic step densities, box-confined stratified sampling, occupancy skipping, compositing."""

from __future__ import annotations

import contextlib
import math

import torch

from ovs3d.field.base import RadianceField, composite
from ovs3d.field.occupancy import build_occupancy
from ovs3d.field.tensorf import TensoRF
from ovs3d.render.samplers import box_intersect, stratified_samples
from ovs3d.render.volume import march, render_rays
from ovs3d.scene.rayspace import BoxSpace

SPACE = BoxSpace(box=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))
BOX = SPACE.box_tensor()


class StepField:
    """sigma = value where z > z0 (world), else 0; colour = constant; the minimal field interface
    (``RadianceField``, field/base.py)."""

    def __init__(self, z0: float, value: float) -> None:
        self.space = SPACE
        self.box = BOX.clone()
        self.z0, self.value = z0, value
        self.distance_scale = 25.0
        self.appearance_dim = 27
        self.reso = (2, 2, 2)
        self.occupancy = None

    def normalize(self, xyz: torch.Tensor) -> torch.Tensor:
        return (xyz - self.box[0]) / (self.box[1] - self.box[0]) * 2 - 1

    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        z_world = xyz[:, 2]  # BOX is [-1, 1]^3, so normalised == world
        return torch.where(z_world > self.z0, torch.full_like(z_world, self.value), torch.zeros_like(z_world))

    def appearance(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz.new_zeros(xyz.shape[0], 27)

    def shade(self, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        return torch.full((features.shape[0], 3), 0.25)

    def density_parameters(self) -> list:
        return []

    def appearance_parameters(self) -> tuple[list, list]:
        return [], []

    def frozen(self):
        return contextlib.nullcontext()


def axial_rays(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n rays entering the box at z = -1 travelling along +z, spread over x, y in (-0.9, 0.9)."""
    xy = torch.linspace(-0.9, 0.9, n)
    origins = torch.stack([xy, xy.flip(0), torch.full((n,), -1.0)], dim=-1)
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3).clone()
    return origins, dirs


def test_step_density_opacity_and_depth() -> None:
    step = 0.01
    z0 = 0.5                                                 # 50 samples of the 200 lie beyond z0
    field = StepField(z0, value=0.4)
    assert isinstance(field, RadianceField)
    origins, dirs = axial_rays(5)
    out = render_rays(field, origins, dirs, step, background=1.0)
    # opacity of a homogeneous slab of length L = 1 - z0: 1 - exp(-sigma * 25 * L)
    expected_acc = 1 - math.exp(-0.4 * 25 * (1 - z0))
    assert torch.allclose(out["acc"], torch.full((5,), expected_acc), atol=1e-5)
    # colour = 0.25 * acc + background * (1 - acc)
    assert torch.allclose(out["rgb"], (0.25 * expected_acc + (1 - expected_acc)) * torch.ones(5, 3), atol=1e-5)
    # depth (t from the entry at z = -1): weights of a geometric series on midpoints t_k = 1.5 + (k + 0.5) step
    tau = 0.4 * 25 * step
    k = torch.arange(50, dtype=torch.float64)
    w = (1 - math.exp(-tau)) * torch.exp(-tau * k)
    t = (1 + z0) + (k + 0.5) * step
    expected_depth = float((w * t).sum() + (1 - w.sum()) * 2.0)  # background at the box exit t_far = 2
    assert torch.allclose(out["depth"], torch.full((5,), expected_depth), atol=1e-4)


def test_opaque_step_depth_is_the_surface() -> None:
    field = StepField(z0=0.2, value=1e4)
    origins, dirs = axial_rays(3)
    out = render_rays(field, origins, dirs, step=0.01)
    assert torch.allclose(out["acc"], torch.ones(3), atol=1e-6)
    assert torch.allclose(out["depth"], torch.full((3,), 1.2 + 0.005), atol=1e-4)  # first sample past z0


def test_samples_never_leave_the_box() -> None:
    gen = torch.Generator().manual_seed(3)
    box = torch.tensor([[-2.0, -1.5, -1.0], [1.0, 2.0, 0.5]])
    origins = torch.rand((4000, 3), generator=gen) * 8 - 4          # many start outside the box
    dirs = torch.randn((4000, 3), generator=gen)
    t, valid, _, _ = stratified_samples(origins, dirs, box, step=0.05, generator=gen)
    points = origins[:, None] + t[..., None] * dirs[:, None]
    inside = ((points >= box[0] - 1e-5) & (points <= box[1] + 1e-5)).all(-1)
    assert valid.any()
    assert bool(inside[valid].all())
    assert bool((t[valid] >= 0).all())


def test_rays_missing_the_box_get_no_samples() -> None:
    origins = torch.tensor([[5.0, 5.0, 5.0], [0.0, 0.0, -3.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    t_near, t_far = box_intersect(origins, dirs, BOX)
    assert t_far[0] <= t_near[0]
    assert torch.allclose(torch.stack([t_near[1], t_far[1]]), torch.tensor([2.0, 4.0]))
    t, valid, _, _ = stratified_samples(origins, dirs, BOX, step=0.1)
    assert not valid[0].any() and int(valid[1].sum()) == 20


def test_jitter_is_per_ray() -> None:
    origins = torch.tensor([[0.0, 0.0, -1.0]]).expand(2, 3)
    dirs = torch.tensor([[0.0, 0.0, 1.0]]).expand(2, 3)
    t, valid, _, _ = stratified_samples(origins, dirs, BOX, 0.1, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(t[0], t[1])
    # each sample stays within its stratum [i step, (i + 1) step)
    strata = torch.arange(t.shape[1]) * 0.1
    assert bool(((t - strata >= 0) & (t - strata < 0.1 + 1e-6))[valid].all())


def test_composite_matches_a_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    values, weights = torch.rand((50, 4), generator=gen), torch.rand(50, generator=gen)
    ray_index = torch.randint(0, 7, (50,), generator=gen)
    out = composite(values, weights, ray_index, 7)
    expected = torch.stack([(values[ray_index == r] * weights[ray_index == r, None]).sum(0) for r in range(7)])
    assert torch.allclose(out, expected, atol=1e-6)


def blob_field() -> TensoRF:
    """A TensoRF whose density is 20 inside a small box (x, y in [-0.3, 0.2], z in [0, 0.4]) and 0 elsewhere:
    one XY-plane component (indicator) times its Z-line (indicator * 20); all other density terms zero."""
    field = TensoRF(SPACE, (41, 41, 41), generator=torch.Generator().manual_seed(0))
    grid = torch.linspace(-1, 1, 41)
    with torch.no_grad():
        for p in [*field.density_grid.planes, *field.density_grid.lines]:
            p.zero_()
        inside_xy = ((grid[None, :] >= -0.3) & (grid[None, :] <= 0.2) & (grid[:, None] >= -0.3)
                     & (grid[:, None] <= 0.2)).float()
        field.density_grid.planes[0][0, 0] = inside_xy
        field.density_grid.lines[0][0, 0, :, 0] = ((grid >= 0.0) & (grid <= 0.4)).float() * 20
    return field


def test_occupancy_skipping_changes_nothing_and_evaluates_fewer_samples() -> None:
    field = blob_field()
    step = 0.02
    field.occupancy = build_occupancy(field, step)
    gen = torch.Generator().manual_seed(2)
    origins = torch.cat([torch.rand((512, 2), generator=gen) * 1.6 - 0.8, torch.full((512, 1), -1.0)], dim=1)
    dirs = torch.cat([torch.randn((512, 2), generator=gen) * 0.2, torch.ones(512, 1)], dim=1)
    with torch.no_grad():
        full = render_rays(field, origins, dirs, step, background=0.5, skip_empty=False)
        fast = render_rays(field, origins, dirs, step, background=0.5, skip_empty=True)
    for key in ("rgb", "depth", "acc"):
        assert (full[key] - fast[key]).abs().max() <= 1e-4, key
    assert float(full["acc"].max()) > 0.9                          # the blob is hit
    fraction = fast["samples"].n_density / full["samples"].n_density
    print(f"occupancy skipping: density evaluated at {fast['samples'].n_density} of "
          f"{full['samples'].n_density} samples ({fraction:.3f})")
    assert fraction < 0.2


def test_march_keeps_only_weights_above_threshold_and_accumulates_all() -> None:
    field = StepField(z0=-0.5, value=0.05)
    origins, dirs = axial_rays(4)
    kept = march(field, origins, dirs, step=0.01, weight_threshold=1e-3)
    every = march(field, origins, dirs, step=0.01, weight_threshold=-1.0)
    assert bool((kept.weights > 1e-3).all()) and kept.n_kept < every.n_kept
    assert float((kept.accumulation - every.accumulation).abs().max()) <= 1e-3   # at most the unseen remainder
    assert torch.allclose(composite(torch.ones(every.n_kept, 1), every.weights, every.ray_index, 4)[:, 0],
                          every.accumulation, atol=1e-6)


def test_early_termination_keeps_exactly_the_samples_a_full_march_keeps() -> None:
    """A ray stops once T <= threshold: the kept samples (rays, depths, weights) are those of the whole ray
    filtered by the threshold, while density is evaluated only up to the first opaque surface."""
    field = StepField(z0=-0.6, value=2.0)                            # opaque a few samples past z0
    origins, dirs = axial_rays(6)
    threshold = 1e-4
    stopped = march(field, origins, dirs, step=0.005, weight_threshold=threshold)
    whole = march(field, origins, dirs, step=0.005, weight_threshold=-1.0)    # never stops
    keep = whole.weights > threshold
    assert torch.equal(stopped.ray_index, whole.ray_index[keep])
    assert torch.allclose(stopped.t, whole.t[keep]) and torch.allclose(stopped.weights, whole.weights[keep], atol=1e-7)
    assert float((stopped.accumulation - whole.accumulation).abs().max()) <= threshold
    assert float(whole.accumulation.min()) > 0.999
    assert stopped.n_density < 0.5 * whole.n_density                # the samples behind the surface are skipped
