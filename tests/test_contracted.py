"""360-degree scenes: the contraction, its sampler, the automatic choice of the ray space, the orbit path,
object masks and both stages on the 360 synthetic scene."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import shared_scene
from ovs3d.errors import InputError
from ovs3d.render.samplers import contracted_samples
from ovs3d.scene.load import load_scene
from ovs3d.scene.masks import read_object_masks
from ovs3d.scene.paths import orbit_path, video_path
from ovs3d.scene.rayspace import CONTRACTED_BOX, BoxSpace, ContractedSpace, NDCSpace, choose_space, contract
from ovs3d.scene.synthetic import make_synthetic_scene


def test_the_contraction_is_the_identity_inside_the_unit_cube_and_maps_into_the_open_cube() -> None:
    g = torch.Generator().manual_seed(0)
    inside = torch.rand(1000, 3, generator=g) * 2 - 1
    assert torch.equal(contract(inside), inside)
    far = torch.randn(1000, 3, generator=g) * 10.0 ** torch.randint(0, 8, (1000, 1), generator=g)
    out = contract(far)
    assert (out.abs().amax(-1) <= 2).all() and torch.isfinite(out).all()   # < 2 up to float32 rounding
    # radial and monotone: contracted norm 2 - 1/r beyond the cube
    r = far.abs().amax(-1)
    outside = r > 1
    assert torch.allclose(out.abs().amax(-1)[outside], 2 - 1 / r[outside], atol=1e-5)
    assert torch.allclose(torch.nn.functional.normalize(out[outside], dim=-1),
                          torch.nn.functional.normalize(far[outside], dim=-1), atol=1e-5)


def test_the_contraction_is_continuous_across_the_cube_surface() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 3, generator=g)
    x = x / x.abs().amax(-1, keepdim=True)                        # on the surface ||x||_inf = 1
    for eps in (1e-3, 1e-5):
        assert (contract(x * (1 + eps)) - contract(x * (1 - eps))).norm(dim=-1).max() < 10 * eps


def test_contracted_samples_stay_in_the_cube_and_are_equally_spaced_there() -> None:
    g = torch.Generator().manual_seed(2)
    origins = torch.randn(64, 3, generator=g) * 2.0          # inside and outside the unit cube
    dirs = torch.randn(64, 3, generator=g)
    box = torch.tensor(CONTRACTED_BOX)
    step = 0.02
    t, valid, _, t_far = contracted_samples(origins, dirs, box, step, contract, far=64.0)
    grid = contract(origins[:, None] + t[..., None] * dirs[:, None])
    assert valid.any() and (grid[valid].abs() <= 2).all()
    assert (t[valid] >= 0).all() and (t <= t_far[:, None] + 1e-4)[valid].all()
    gaps = (grid[:, 1:] - grid[:, :-1]).norm(dim=-1)[valid[:, 1:] & valid[:, :-1]]
    assert abs(float(gaps.mean()) - step) < 0.02 * step and float(gaps.max()) < 1.5 * step
    inner = torch.zeros(1, 3), torch.tensor([[1.0, 0.0, 0.0]])       # inside the cube: uniform in t
    t_in, valid_in, _, _ = contracted_samples(*inner, box, step, contract, far=64.0)
    t_in = t_in[valid_in][t_in[valid_in] < 1]
    assert torch.allclose(t_in[1:] - t_in[:-1], torch.full_like(t_in[1:], step), atol=1e-5)
    # with jitter every sample still lies in the cube
    t_j, valid_j, _, _ = contracted_samples(origins, dirs, box, step, contract, 64.0, torch.Generator().manual_seed(3))
    assert (contract(origins[:, None] + t_j[..., None] * dirs[:, None])[valid_j].abs() <= 2).all()


@pytest.fixture(scope="module")
def scene_360(tmp_path_factory) -> Path:
    return make_synthetic_scene(tmp_path_factory.mktemp("s360") / "scene", seed=3, n_views=12, width=64, height=48,
                                n_annotated=3, supersample=1, layout="360")


def test_the_360_synthetic_scene_is_detected_as_360_and_gets_the_contracted_space(scene_360: Path) -> None:
    scene = load_scene(scene_360)
    assert scene.kind == "360" and len(scene.classes) == 7 and scene.annotations is not None
    space, reason = choose_space(scene)
    assert isinstance(space, ContractedSpace) and "surround" in reason
    meta = json.loads((scene_360 / "scene.json").read_text())
    assert meta["config"]["layout"] == "360"
    # the framing sphere holds every object: each object centre lies inside it (normalised units)
    centers = scene.cameras.centers.norm(dim=-1)
    assert float(centers.min()) > space.radius


@pytest.mark.parametrize("name,kind", [("fern_504", "forward"), ("statue_504", "forward"),
                                       ("bird_360", "360"), ("maryrose_360_504", "360")])
def test_the_detector_classifies_the_real_scenes(name: str, kind: str) -> None:
    scene = load_scene(shared_scene(name), downsample=8, load_annotations=False)
    assert scene.kind == kind
    space, _ = choose_space(scene)
    expected = {"forward": NDCSpace, "360": BoxSpace if scene.object_masks is not None else ContractedSpace}[kind]
    assert isinstance(space, expected)


def test_the_orbit_goes_through_the_camera_ring_and_looks_at_the_centre(scene_360: Path) -> None:
    scene = load_scene(scene_360, load_annotations=False)
    path = orbit_path(scene.cameras, 36)
    centers = path.c2w[:, :, 3]
    ring = scene.cameras.centers
    assert abs(float(centers.norm(dim=-1).mean() - ring.norm(dim=-1).mean())) < 0.05
    assert abs(float(centers[:, 1].mean() - ring[:, 1].mean())) < 1e-4
    looking = -path.c2w[:, :, 2]
    to_origin = torch.nn.functional.normalize(-centers, dim=-1)
    assert ((looking * to_origin).sum(-1) > 0.9999).all()
    assert len(video_path(scene.cameras, scene.bounds, "360", 10)) == 10


def test_masks_are_read_by_name_and_a_missing_one_is_named(tmp_path: Path) -> None:
    from ovs3d.io.images import write_png    # test-only helper import

    images = [tmp_path / "images" / f"IMG_{i}.jpg" for i in range(3)]
    (tmp_path / "masks").mkdir()
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    write_png(tmp_path / "masks" / "IMG_0_mask.png", mask)
    write_png(tmp_path / "masks" / "IMG_1.png", mask)
    with pytest.raises(InputError, match="IMG_2"):
        read_object_masks(tmp_path, images, (8, 8))
    write_png(tmp_path / "masks" / "IMG_2_mask.png", mask)
    masks = read_object_masks(tmp_path, images, (4, 4))
    assert masks.shape == (3, 4, 4) and masks[:, 1:3, 1:3].min() == 1 and masks[:, 0].max() == 0
    assert read_object_masks(tmp_path / "nowhere", images, (4, 4)) is None


def test_both_stages_run_in_the_contracted_space(scene_360: Path, tmp_path: Path) -> None:
    from ovs3d.eval.segment_eval import TestConfig as StageTestConfig  # (not collected as a test class)
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig
    from ovs3d.pipeline import PipelineConfig, run_pipeline
    from ovs3d.runs.load import load_run

    from ovs3d.train.configs import preset

    config = PipelineConfig.from_preset("test", test=StageTestConfig(video_frames=2),
                                        extract=ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin")))
    short = preset("reconstruct", "test", n_iters=40, batch_size=256, upsample_iters=(10, 20), alpha_mask_iters=(15,),
                   checkpoint_every=40)   # only that both stages run here: a quarter of the test preset
    config = dataclasses.replace(config, reconstruct=short)
    run_pipeline(scene_360, tmp_path / "run", config, log=lambda line: None, device="cpu")
    model, record = load_run(tmp_path / "run" / "segment", "cpu")
    assert record.space["name"] == "contracted"
    metrics = json.loads((tmp_path / "run" / "test" / "metrics.json").read_text())
    assert metrics["metrics_computed"] and math.isfinite(metrics["3dovs"]["miou"])
    assert any((tmp_path / "run" / "test" / "segmentations_path").glob("video.*"))
    # the viewer renders the contracted run from a dataset camera and along the scene's orbit
    from ovs3d.viewer.camera import dataset_view
    from ovs3d.viewer.frames import Settings, ViewRenderer
    from ovs3d.viewer.path_video import render_path_video

    renderer = ViewRenderer.from_run(tmp_path / "run" / "segment", "cpu")
    frame = renderer.render(dataset_view(renderer.scene.cameras, 0), 16, renderer.outputs("labels"))
    assert renderer.scene.kind == "360" and np.isfinite(frame.rgb).all() and frame.rgb.max() > 0.05
    assert frame.features is not None and torch.isfinite(frame.features).all()
    video = render_path_video(renderer, Settings(mode="labels"), tmp_path / "view", frames=2, height=12)
    assert video.is_file() and video.stat().st_size > 0


def test_the_contracted_space_maps_grid_points_back_to_the_scene() -> None:
    space = ContractedSpace(radius=0.4)
    x = torch.randn(200, 3, dtype=torch.float64) * 3
    grid = space.warp(x / space.radius)
    assert torch.allclose(space.to_scene(grid, None), x, rtol=1e-6, atol=1e-9)
