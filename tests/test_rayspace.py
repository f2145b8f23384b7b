"""Ray spaces: chosen once from the camera layout, one definition of each box, stored and read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ovs3d.errors import InputError
from ovs3d.scene.cameras import ndc_rays
from ovs3d.scene.load import load_scene
from ovs3d.scene.rayspace import NDC_BOX, BoxSpace, ContractedSpace, NDCSpace, choose_space, content_box, space_from_dict


def test_ndc_space_rays_are_the_ndc_warp_of_the_camera_rays(synthetic_scene: Path) -> None:
    cams = load_scene(synthetic_scene, load_annotations=False).cameras
    view = torch.tensor([0, 3, 7])
    u, v = torch.tensor([0.5, 40.0, 95.5]), torch.tensor([0.5, 30.0, 71.5])
    o, d = cams.rays(view, u, v)
    o_ndc, d_ndc = ndc_rays(o, d, cams.fx[0], cams.width, cams.height)
    got_o, got_d = NDCSpace().rays(cams, view, u, v)
    assert torch.equal(got_o, o_ndc) and torch.equal(got_d, d_ndc)
    assert NDCSpace().box == NDC_BOX


def test_box_space_rays_are_world_rays_and_the_warp_is_the_identity(synthetic_scene: Path) -> None:
    cams = load_scene(synthetic_scene, load_annotations=False).cameras
    view, u, v = torch.tensor([1]), torch.tensor([10.0]), torch.tensor([20.0])
    space = BoxSpace(box=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))
    assert all(torch.equal(a, b) for a, b in zip(space.rays(cams, view, u, v), cams.rays(view, u, v)))
    x = torch.rand(5, 3)
    assert space.warp(x) is x


@pytest.mark.parametrize("space", [NDCSpace(), BoxSpace(box=((-1.5, 0.0, 2.0), (3.0, 4.0, 5.0))),
                                   ContractedSpace(radius=0.3, far=32.0)])
def test_a_space_round_trips_through_its_dict(space) -> None:
    assert space_from_dict(space.to_dict()) == space


def test_the_space_is_chosen_from_the_camera_layout(synthetic_scene: Path) -> None:
    scene = load_scene(synthetic_scene, load_annotations=False)
    space, reason = choose_space(scene)
    assert isinstance(space, NDCSpace) and "forward-facing" in reason
    box, _ = choose_space(scene, "box")
    assert isinstance(box, BoxSpace) and box.box == content_box(scene.cameras, scene.bounds)
    scene.kind = "360"
    space, reason = choose_space(scene)
    assert isinstance(space, ContractedSpace) and "surround" in reason
    scene.object_masks = np.ones((scene.n_images, scene.height, scene.width), np.float32)
    space, reason = choose_space(scene)
    assert isinstance(space, BoxSpace) and "masks" in reason


def test_the_content_box_holds_every_camera_frustum_between_its_bounds(synthetic_scene: Path) -> None:
    scene = load_scene(synthetic_scene, load_annotations=False)
    lo, hi = (torch.tensor(c) for c in content_box(scene.cameras, scene.bounds))
    o, d = scene.cameras.image_rays(2)
    for depth in scene.bounds[2]:
        points = (o + float(depth) * d).reshape(-1, 3)
        assert (points >= lo - 1e-4).all() and (points <= hi + 1e-4).all()
