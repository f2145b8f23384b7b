"""TensoRF field: lookups against grid_sample, gradients, upsampling, shrinking, TV, occupancy grid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf

from ovs3d.field.occupancy import OccupancyGrid, build_occupancy
from ovs3d.field import tensorf
from ovs3d.field.tensorf import TensoRF
from ovs3d.field.vm import plane_tv, sample_line, sample_plane
from ovs3d.scene.rayspace import NDCSpace

SPACE = NDCSpace()   # box (-2, -2, -1)..(2, 2, 1)


@pytest.mark.parametrize("n_samples", [10, 300])  # 40 taps < 63 cells: channel-major gather; 1200: row gather
def test_plane_and_line_lookups_match_grid_sample_values_and_gradients(n_samples: int) -> None:
    gen = torch.Generator().manual_seed(0)
    plane = torch.randn((1, 5, 7, 9), generator=gen, requires_grad=True)
    uv = torch.rand((n_samples, 2), generator=gen) * 2 - 1
    uv[:4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    ref = nnf.grid_sample(plane, uv.view(1, -1, 1, 2), align_corners=True).view(5, -1).t()
    ours = sample_plane(plane, uv)
    assert torch.allclose(ours, ref, atol=1e-6)
    upstream = torch.randn(ref.shape, generator=gen)
    (g_ref,) = torch.autograd.grad((ref * upstream).sum(), plane)
    (g_ours,) = torch.autograd.grad((ours * upstream).sum(), plane)
    assert torch.allclose(g_ours, g_ref, atol=1e-5)

    line = torch.randn((1, 5, 11, 1), generator=gen)
    w = torch.rand(300, generator=gen) * 2 - 1
    grid = torch.stack([torch.zeros_like(w), w], -1).view(1, -1, 1, 2)
    ref_line = nnf.grid_sample(line, grid, align_corners=True).view(5, -1).t()
    assert torch.allclose(sample_line(line, w), ref_line, atol=1e-6)


def test_shapes_components_and_seeded_init() -> None:
    a = TensoRF(SPACE, (20, 18, 10), generator=torch.Generator().manual_seed(7))
    b = TensoRF(SPACE, (20, 18, 10), generator=torch.Generator().manual_seed(7))
    assert [tuple(p.shape) for p in a.density_grid.planes] == [(1, 16, 18, 20), (1, 4, 10, 20), (1, 4, 10, 18)]
    assert [tuple(p.shape) for p in a.appearance_grid.lines] == [(1, 48, 10, 1), (1, 12, 18, 1), (1, 12, 20, 1)]
    assert a.basis.in_features == 72 and a.basis.out_features == 27 and a.basis.bias is None
    assert torch.count_nonzero(a.mlp[-1].bias) == 0
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    std = torch.cat([p.detach().flatten() for p in a.density_grid.planes]).std()
    assert abs(float(std) - 0.1) < 0.01
    xyz = torch.rand(64, 3) * 2 - 1
    assert a.density(xyz).shape == (64,) and bool((a.density(xyz) >= 0).all())
    feat = a.appearance(xyz)
    rgb = a.shade(feat, torch.nn.functional.normalize(torch.randn(64, 3), dim=-1))
    assert feat.shape == (64, 27) and rgb.shape == (64, 3) and bool(((rgb > 0) & (rgb < 1)).all())
    groups = a.parameter_groups(0.02, 1e-4)
    assert [g["name"] for g in groups] == ["grids", "network"]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in a.parameters())


def test_frozen_lookups_match_the_planes_and_follow_every_change_of_the_field(monkeypatch) -> None:
    """Inside ``frozen``, density and appearance without gradients come from dense volumes (trilinear
    lookups): they must equal the plane-line values at any point (also outside the box). Outside it there
    is no cache; so after a step of the fused Adam (which does not bump the parameters' versions),
    upsampling or shrinking, the next scope sees the new field. The volumes are built in several slabs of z layers."""
    monkeypatch.setattr(tensorf, "DENSE_SLAB_NODES", 2 * 17 * 15)    # several slabs, a short last one
    field = TensoRF(SPACE, (13, 9, 7), generator=torch.Generator().manual_seed(3))
    xyz = torch.rand(3000, 3, generator=torch.Generator().manual_seed(4)) * 2.4 - 1.2
    xyz[:4] = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, -1.0, 0.0], [0.0, 0.0, 0.0]])

    def check() -> None:
        with torch.enable_grad():
            sigma, feat = field.density(xyz), field.appearance(xyz)
        with torch.no_grad(), field.frozen():
            assert torch.allclose(field.density(xyz), sigma, atol=1e-5)
            assert torch.allclose(field.appearance(xyz), feat, atol=1e-5)
            with field.frozen():                          # nested: the outer scope's volumes
                field.density(xyz)
            assert set(field._dense) == {"density", "appearance"}
            with torch.enable_grad():                     # gradients on: the planes, differentiable
                assert field.density(xyz).requires_grad
        assert field._dense is None

    check()
    optimizer = torch.optim.Adam(field.parameters(), lr=0.1, fused=True)
    with torch.enable_grad():
        (field.density(xyz).sum() + field.appearance(xyz).sum()).backward()
    with torch.no_grad(), field.frozen():
        before = field.density(xyz)
    optimizer.step()
    assert not torch.allclose(field.density(xyz), before)   # the step changed the field
    check()
    field.upsample((17, 15, 9))
    check()
    field.shrink(torch.tensor([[-0.6, -0.5, -0.4], [0.5, 0.7, 0.4]]))
    check()
    with torch.no_grad(), field.frozen():                  # an in-place change inside bumps a version: rebuilt
        field.density(xyz)
        field.density_grid.lines[0].mul_(2.0)
        with torch.enable_grad():
            sigma = field.density(xyz)
        assert torch.allclose(field.density(xyz), sigma.detach(), atol=1e-5)


def test_upsampling_preserves_a_multilinear_field() -> None:
    field = TensoRF(SPACE, (9, 9, 5))
    with torch.no_grad():   # density feature = (x + 2) * (z + 3) in normalised coordinates: bilinear x linear
        for p in [*field.density_grid.planes, *field.density_grid.lines]:
            p.zero_()
        field.density_grid.planes[0][0, 0] = (torch.linspace(-1, 1, 9) + 2)[None, :].expand(9, 9)
        field.density_grid.lines[0][0, 0, :, 0] = torch.linspace(-1, 1, 5) + 3
    xyz = torch.rand(500, 3) * 2 - 1
    before = field.density(xyz)
    field.upsample((17, 13, 11))
    assert field.reso == (17, 13, 11) and tuple(field.density_grid.planes[0].shape) == (1, 16, 13, 17)
    assert torch.allclose(field.density(xyz), before, atol=1e-5)
    assert torch.allclose(before, (xyz[:, 0] + 2) * (xyz[:, 2] + 3), atol=1e-5)


def test_shrink_keeps_values_inside_the_new_box() -> None:
    field = TensoRF(SPACE, (21, 21, 11), generator=torch.Generator().manual_seed(1))
    points = torch.rand(400, 3) * torch.tensor([1.5, 1.2, 0.6]) + torch.tensor([-1.0, -0.5, -0.2])
    sigma, feat = field.density(field.normalize(points)), field.appearance(field.normalize(points))
    field.shrink(torch.tensor([[-1.0, -0.5, -0.2], [0.5, 0.7, 0.4]]))
    assert field.box[0, 0] <= -1.0 and field.box[1, 0] >= 0.5 and field.reso[0] < 21
    assert torch.allclose(field.density(field.normalize(points)), sigma, atol=1e-5)
    assert torch.allclose(field.appearance(field.normalize(points)), feat, atol=1e-5)


def test_tv_of_constant_and_ramp() -> None:
    assert float(plane_tv(torch.ones(1, 3, 5, 6))) == 0.0
    ramp = torch.arange(6.0).expand(1, 2, 4, 6)      # horizontal diffs 1, vertical 0
    assert abs(float(plane_tv(ramp)) - 2.0) < 1e-6


def test_occupancy_grid_lookup_and_bounding_box() -> None:
    mask = torch.zeros(5, 5, 5, dtype=torch.bool)
    mask[2, 1, 3] = True                              # node (x=3, y=1, z=2)
    grid = OccupancyGrid(mask, torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0]]))
    assert torch.allclose(grid.occupied_box(), torch.tensor([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]]))
    pts = torch.tensor([[2.5, 0.5, 1.5], [3.5, 1.5, 2.5], [0.5, 3.5, 0.5], [9.0, 1.0, 2.0]])
    assert grid.occupied(pts).tolist() == [True, True, False, False]


def test_build_occupancy_pools_and_thresholds() -> None:
    field = TensoRF(SPACE, (11, 11, 11))
    with torch.no_grad():
        for p in [*field.density_grid.planes, *field.density_grid.lines]:
            p.zero_()
        field.density_grid.planes[0][0, 0, 5, 5] = 1.0       # a single node (x=5, y=5) ...
        field.density_grid.lines[0][0, 0, 5, 0] = 1.0        # ... at z=5
    grid = build_occupancy(field, step=0.01)
    assert int(grid.mask.sum()) == 27                     # 3x3x3 max-pool of one node
    assert torch.allclose(grid.occupied_box(), torch.tensor([[-0.4, -0.4, -0.2], [0.4, 0.4, 0.2]]), atol=1e-5)
