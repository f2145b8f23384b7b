"""Tests of the stage-2 semantic field (ovs3d/field/semantic.py), both modes."""

from __future__ import annotations

import math

import pytest
import torch

from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF
from ovs3d.field.base import composite
from ovs3d.scene.rayspace import BoxSpace


def make_field(mode: str, seed: int = 0) -> SemanticField:
    g = torch.Generator().manual_seed(seed)
    base = TensoRF(BoxSpace(box=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))), (9, 8, 7), generator=g)
    return SemanticField(base, SemanticConfig(mode=mode), generator=g)


def packed_samples(seed: int = 1, n_rays: int = 5, m: int = 40):
    g = torch.Generator().manual_seed(seed)
    xyz = torch.rand(m, 3, generator=g) * 2 - 1
    weights = torch.rand(m, generator=g) * 0.2
    ray_index = torch.sort(torch.randint(0, n_rays, (m,), generator=g)).values
    return xyz, weights, ray_index, n_rays


@pytest.mark.parametrize("mode", ["faithful", "improved"])
def test_rendered_feature_equals_composite_of_per_point_head(mode):
    field = make_field(mode)
    xyz, w, idx, n = packed_samples()
    out = field.render(xyz, w, idx, n)
    per_point = field.feature_of_points(field.field.appearance(xyz))
    torch.testing.assert_close(out["features"], composite(per_point, w, idx, n), rtol=1e-5, atol=1e-5)
    acc = torch.zeros(n).index_add(0, idx, w)
    torch.testing.assert_close(out["acc"], acc)
    torch.testing.assert_close(out["selection"].sum(-1), torch.ones(n))


def test_faithful_head_is_affine_and_improved_is_not():
    a = torch.randn(3, 27, generator=torch.Generator().manual_seed(2))
    mid = (a[0] + a[1]) / 2
    faithful, improved = make_field("faithful"), make_field("improved")
    f = faithful.feature_of_points(torch.stack([a[0], a[1], mid]))
    torch.testing.assert_close(f[2], (f[0] + f[1]) / 2, rtol=1e-5, atol=1e-5)
    g = improved.feature_of_points(torch.stack([a[0], a[1], mid]))
    assert (g[2] - (g[0] + g[1]) / 2).abs().max() > 1e-3


def test_selection_bounds_faithful_vs_improved():
    xyz, w, idx, n = packed_samples()
    w = torch.full_like(w, 1.0 / 8)  # every ray has acc = count/8 <= 1 only if <= 8 samples; clamp below
    idx = torch.arange(40) // 8  # 5 rays x 8 samples, acc = 1
    for mode, big in (("faithful", False), ("improved", True)):
        field = make_field(mode)
        with torch.no_grad():
            field.select_basis.bias.copy_(torch.tensor([50.0, 0.0, 0.0]))
            field.select_basis.weight.zero_()
        s = field.render(xyz, w, idx, n)["selection"]
        if big:
            assert s[:, 0].min() > 0.99  # unbounded logits can select one scale
        else:
            # logits in [0, acc] = [0, 1]: the best weight is at most e / (e + 2) ~ 0.576
            assert s[:, 0].max() <= math.e / (math.e + 2) + 1e-6


def test_freezing_and_gradients():
    field = make_field("faithful")
    assert not any(p.requires_grad for p in field.field.density_grid.planes.parameters())
    assert not any(p.requires_grad for p in field.field.appearance_grid.planes.parameters())
    xyz, w, idx, n = packed_samples()
    out = field.render(xyz, w, idx, n)
    (out["features"].sum() + out["selection"][:, 0].sum()).backward()
    assert field.head[0].weight.grad is not None and field.selection_grid.planes[0].grad is not None
    field.set_appearance_trainable(True)
    assert all(p.requires_grad for p in field.field.appearance_grid.planes.parameters())
    assert not any(p.requires_grad for p in field.field.density_grid.lines.parameters())
    names = [g["name"] for g in field.parameter_groups(0.02, 1e-4, joint=True)]
    assert names == ["head", "select_grids", "select_basis", "app_grids", "app_network"]


def test_rgb_rendered_when_view_directions_given():
    field = make_field("improved")
    xyz, w, idx, n = packed_samples()
    dirs = torch.nn.functional.normalize(torch.randn(xyz.shape[0], 3), dim=-1)
    out = field.render(xyz, w, idx, n, viewdirs=dirs, with_selection=False)
    assert out["rgb"].shape == (n, 3) and "selection" not in out
