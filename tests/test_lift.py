"""Instant stage 2 (training-free lifting): closed-form scenes, the adjoint's conservation, streaming, the
scale rule, the run every verb reads, and the warm start of a trained stage 2."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from ovs3d.features.cache import FeatureMaps
from ovs3d.features.encoders import ClipConfig, DinoConfig
from ovs3d.features.extract import ExtractConfig
from ovs3d.field.lifted import LiftedField
from ovs3d.field.vm import trilinear_corners
from ovs3d.field.semantic import SemanticField
from ovs3d.render.volume import march
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.rayspace import BoxSpace
from ovs3d.train.configs import LiftConfig, preset
from ovs3d.train.lift import lift, node_selection, ray_confidence, smooth_features, strided_pixels, sweep_stride
from ovs3d.train.segment_data import SegmentationData

SPACE = BoxSpace(box=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0)))
STEP = 0.02


class PlaneField:
    """An opaque slab z in [-0.4, -0.2] (world = unit coordinates in this [-1, 1]^3 box) seen from above:
    the minimal ``RadianceField``; every ray from the cameras at z = 3 stops in its top layer."""

    def __init__(self) -> None:
        self.space, self.box = SPACE, SPACE.box_tensor()
        self.distance_scale, self.appearance_dim, self.reso, self.occupancy = 25.0, 27, (17, 17, 17), None

    def normalize(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz

    def density(self, xyz: torch.Tensor) -> torch.Tensor:
        z = xyz[:, 2]
        return torch.where((z > -0.4) & (z < -0.2), torch.full_like(z, 50.0), torch.zeros_like(z))

    def appearance(self, xyz: torch.Tensor) -> torch.Tensor:
        return xyz.new_zeros(xyz.shape[0], 27)

    def shade(self, features: torch.Tensor, viewdirs: torch.Tensor) -> torch.Tensor:
        return torch.full((features.shape[0], 3), 0.5)

    def parameters(self):
        return iter(())

    def frozen(self):
        return contextlib.nullcontext()


def plane_data(maps: list[np.ndarray], n_classes: int = 2, text: torch.Tensor | None = None) -> SegmentationData:
    """Two downward cameras (z = 3, 16x12 pixels, focal 16) over the plane, CLIP maps ``maps`` [3, D, 12, 16],
    class texts ``text`` [C, D] (default: ``n_classes`` random unit vectors)."""
    c2w = torch.zeros(2, 3, 4)
    c2w[:, :, :3] = torch.eye(3)
    c2w[:, 2, 3] = 3.0
    c2w[1, 1, 3] = 0.1
    cams = Cameras.from_focal(c2w, 16.0, 16, 12)
    dim = maps[0].shape[1]
    if text is None:
        text = nnf.normalize(torch.randn(n_classes, dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    return SegmentationData(clip=FeatureMaps.from_arrays(maps, encoder="test"), dino=None, views=[0, 1],
                            rgb=np.zeros((2, 12, 16, 3), np.float32), text=text, clip_cameras=cams, dino_cameras=None)


def unit(dim: int, k: int) -> np.ndarray:
    e = np.zeros(dim, np.float32)
    e[k] = 1.0
    return e


def test_a_plane_with_one_feature_everywhere_lifts_exactly_that_feature() -> None:
    f = nnf.normalize(torch.arange(1.0, 17.0), dim=0).numpy()
    maps = [np.broadcast_to(f[None, :, None, None], (3, 16, 12, 16)).astype(np.float16) for _ in range(2)]
    model, stats = lift(PlaneField(), plane_data(maps), LiftConfig(pixel_stride=1, batch_rays=50), STEP)
    assert stats["nodes"] > 0 and stats["rays"] == 2 * 12 * 16
    torch.testing.assert_close(model.features.float(), torch.from_numpy(f).expand(stats["nodes"], 16).float(),
                               atol=2e-3, rtol=0)
    # every lifted node is a corner of a cell the top layer of the slab passes through
    z = model.config.reso[2]
    rows = (model.node_row >= 0).nonzero().squeeze(1)
    node_z = -1 + 2 * (rows // (17 * 17)).float() / (z - 1)
    assert node_z.min() >= -0.4 - 2 / (z - 1) and node_z.max() <= -0.2 + 2 / (z - 1)
    # rendering the lifted run: the rays' normalised F is f, S a distribution over the 3 scales
    o, d = SPACE.rays(plane_data(maps).clip_cameras, torch.zeros(4, dtype=torch.long), torch.full((4,), 8.0),
                      torch.tensor([3.0, 5.0, 7.0, 9.0]))
    s = march(model.field, o, d, STEP)
    out = model.render(s.xyz, s.weights, s.ray_index, s.n_rays)
    torch.testing.assert_close(nnf.normalize(out["features"], dim=-1), torch.from_numpy(f).expand(4, 16),
                               atol=2e-3, rtol=0)
    torch.testing.assert_close(out["selection"].sum(-1), torch.ones(4))


def test_two_halves_with_two_features_lift_each_onto_its_own_half() -> None:
    dim = 8
    half = np.zeros((3, dim, 12, 16), np.float32)
    half[:, :, :, :8] = unit(dim, 0)[None, :, None, None]       # image x < 8 (world x < 0): feature e0
    half[:, :, :, 8:] = unit(dim, 1)[None, :, None, None]       # world x > 0: e1
    model, stats = lift(PlaneField(), plane_data([half.astype(np.float16)] * 2), LiftConfig(pixel_stride=1), STEP)
    flat = (model.node_row >= 0).nonzero().squeeze(1)
    x = -1 + 2 * (flat % 17).float() / 16
    f = model.features.float()[model.node_row[flat].long()]
    left, right = x < -0.3, x > 0.3
    assert left.any() and right.any()
    torch.testing.assert_close(f[left], torch.from_numpy(unit(dim, 0)).expand(int(left.sum()), dim), atol=2e-3, rtol=0)
    torch.testing.assert_close(f[right], torch.from_numpy(unit(dim, 1)).expand(int(right.sum()), dim), atol=2e-3, rtol=0)


def test_dino_smoothing_mixes_only_neighbours_that_dino_groups() -> None:
    """Three nodes in a row with features e0, e1, e0: one step gives the middle normalize(e1 + e0 + e0) when
    the DINO features agree (affinity 1) and leaves it e1 when the middle's DINO is orthogonal (affinity 0)."""
    e = torch.eye(4)
    features = torch.stack([e[0], e[1], e[0]])
    nodes = torch.tensor([0, 1, 2])
    row_of = torch.tensor([0, 1, 2, -1, -1, -1, -1, -1])                     # a 4 x 1 x 2 grid, nodes 0-2 held
    same = smooth_features(features, torch.ones(3, 2), row_of, nodes, (4, 1, 2), 1, 0.7)
    torch.testing.assert_close(same[1], nnf.normalize(e[1] + 2 * e[0], dim=0))
    torch.testing.assert_close(same[0], nnf.normalize(e[0] + e[1], dim=0))
    apart = smooth_features(features, torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), row_of, nodes, (4, 1, 2),
                            3, 0.7)
    torch.testing.assert_close(apart, features)


def test_the_lifting_with_dino_smoothing_keeps_two_halves_apart() -> None:
    dim = 8
    half = np.zeros((3, dim, 12, 16), np.float32)
    half[:, :, :, :8] = unit(dim, 0)[None, :, None, None]
    half[:, :, :, 8:] = unit(dim, 1)[None, :, None, None]
    dino = np.zeros((4, 12, 16), np.float32)
    dino[0, :, :8], dino[1, :, 8:] = 1.0, 1.0
    data = plane_data([half.astype(np.float16)] * 2)
    data.dino = FeatureMaps.from_arrays([dino.astype(np.float16)] * 2, encoder="test")
    model, _ = lift(PlaneField(), data, LiftConfig(pixel_stride=1, smooth_steps=3), STEP)
    flat = (model.node_row >= 0).nonzero().squeeze(1)
    x = -1 + 2 * (flat % 17).float() / 16
    f = model.features.float()[model.node_row[flat].long()]
    left = x < -0.3
    torch.testing.assert_close(f[left], torch.from_numpy(unit(dim, 0)).expand(int(left.sum()), dim), atol=2e-3, rtol=0)


def test_the_scatter_conserves_weight_and_streams_per_batch() -> None:
    """sum_n W_n = sum_i w_i (the corner weights sum to 1), and no read of the teacher exceeds one batch."""
    rng = np.random.default_rng(0)
    maps = [rng.standard_normal((3, 16, 12, 16)).astype(np.float16) for _ in range(2)]
    data = plane_data(maps)
    reads: list[int] = []
    sample = data.clip.sample
    data.clip.sample = lambda view, u, v: reads.append(len(u)) or sample(view, u, v)
    model, stats = lift(PlaneField(), data, LiftConfig(pixel_stride=1, batch_rays=64), STEP)
    assert max(reads) <= 64 and sum(reads) == stats["rays"]
    o, d = SPACE.rays(data.clip_cameras, torch.tensor([0, 1]).repeat_interleave(192),
                      torch.arange(16.0).repeat(24) + 0.5, torch.arange(12.0).repeat_interleave(16).repeat(2) + 0.5)
    s = march(PlaneField(), o, d, STEP, weight_threshold=LiftConfig().weight_threshold)
    torch.testing.assert_close(model.node_weight.sum(), s.weights.sum(), rtol=1e-4, atol=0)


def test_confidence_weighting_lets_the_confident_view_decide() -> None:
    """View 0 shows e0 | e1 (left | right half: relevancies 1 / 0, confidence 1), view 1 the same plane as a flat
    mixture (equal relevancies, confidence 0): weighted by confidence, the lifted left half is e0, not a blend."""
    torch.testing.assert_close(ray_confidence(torch.tensor([[[1.0, 0.0], [0.8, 0.2]], [[0.5, 0.5], [0.5, 0.5]]])),
                               torch.tensor([0.8, 0.0]))
    dim = 8
    sharp = np.zeros((3, dim, 12, 16), np.float32)
    sharp[:, :, :, :8] = unit(dim, 0)[None, :, None, None]
    sharp[:, :, :, 8:] = unit(dim, 1)[None, :, None, None]
    flat = np.broadcast_to(((unit(dim, 0) + unit(dim, 1)) / np.sqrt(2))[None, :, None, None], sharp.shape)
    text = torch.from_numpy(np.stack([unit(dim, 0), unit(dim, 1)]))
    data = plane_data([sharp.astype(np.float16), flat.astype(np.float16)], text=text)
    left = {}
    for weighted in (True, False):
        model, _ = lift(PlaneField(), data, LiftConfig(pixel_stride=1, confidence_weighted=weighted), STEP)
        rows = (model.node_row >= 0).nonzero().squeeze(1)
        x = -1 + 2 * (rows % 17).float() / 16
        left[weighted] = model.features.float()[model.node_row[rows[x < -0.3]].long()]
        torch.testing.assert_close(model.node_weight.sum(), lift(PlaneField(), data, LiftConfig(
            pixel_stride=1, confidence_weighted=not weighted), STEP)[0].node_weight.sum())   # W_n: coverage either way
    assert float(left[True][:, 0].min()) > 0.99                        # e0: the confident view decides
    assert float(left[False][:, 1].max()) > 0.2                        # the plain mean blends in the flat view


def test_trilinear_corner_weights_interpolate_the_grid_exactly() -> None:
    xyz = torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    corners, b = trilinear_corners(xyz, (5, 4, 3))
    torch.testing.assert_close(b.sum(-1), torch.ones(50))
    gx, gy = 5, 4
    nodes = torch.stack([corners % gx, (corners // gx) % gy, corners // (gx * gy)], -1).float()
    positions = nodes / torch.tensor([4.0, 3.0, 2.0]) * 2 - 1
    torch.testing.assert_close((b[..., None] * positions).sum(1), xyz)   # trilinear reproduces linear functions


def test_the_selection_prefers_the_scale_whose_mean_relevancy_is_confident() -> None:
    mean = torch.tensor([[[0.5, 0.5, 0.4], [0.9, 0.1, 0.2], [0.6, 0.5, 0.5]]])   # [1 node, 3 scales, 3 classes]
    s = node_selection(mean, temperature=0.05)
    assert s.argmax().item() == 1 and s[0, 1] > 0.99
    torch.testing.assert_close(s.sum(-1), torch.ones(1))


def test_strided_pixels_cover_every_pixel_over_the_views_within_the_ray_budget() -> None:
    flat = strided_pixels(4, 6, 8, 2)
    assert flat.numel() == 4 * 3 * 4
    assert set((flat % 48).tolist()) == set(range(48))
    assert sweep_stride(4, 6, 8, 2, 0) == 2 and sweep_stride(4, 6, 8, 2, 48) == 2
    assert sweep_stride(4, 6, 8, 2, 47) == 3 and sweep_stride(4, 6, 8, 1, 1) == 8


def test_an_instant_run_is_a_stage_two_run_that_test_query_view_and_export_read(synthetic_scene: Path,
                                                                               tmp_path: Path) -> None:
    from ovs3d.eval.query import run_query
    from ovs3d.export.run import export_run
    from ovs3d.pipeline import PipelineConfig, run_pipeline
    from ovs3d.runs.load import load_run
    from ovs3d.viewer.camera import dataset_view
    from ovs3d.viewer.frames import ViewRenderer

    scene = tmp_path / "scene"
    shutil.copytree(synthetic_scene, scene)
    config = PipelineConfig.from_preset(
        "test", extract=ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin")))
    config.segment = preset("segment", "test", mode="instant")
    config.test.video_frames = 0
    out = tmp_path / "run"
    rows = run_pipeline(scene, out, config, log=lambda _line: None, device="cpu")
    assert [r.status for r in rows] == ["ran"] * 4 and rows[2].metric.startswith("instant lifting")
    model, record = load_run(out / "segment", stage="segment")
    assert isinstance(model, LiftedField) and record.complete and record.semantic["mode"] == "instant"
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert metrics["semantic_mode"] == "instant" and 0.0 <= metrics["3dovs"]["miou"] <= 1.0
    assert metrics["builtin_encoders"] is True
    query = run_query(out / "segment", ["red"], views=[0], out=tmp_path / "query", device="cpu", repeats=1)
    assert (tmp_path / "query" / "query.json").is_file() and query
    renderer = ViewRenderer.from_run(out / "segment")
    assert renderer.basis is None
    frame = renderer.render(dataset_view(renderer.scene.cameras, 0), 24, renderer.outputs("relevancy"))
    assert frame.features.shape[-1] == model.config.feature_dim and frame.selection is None
    summary = export_run(out / "segment", "all", out=tmp_path / "export", progress=False)
    assert summary["points"] > 0

    # warm start: a trained stage 2 distilled onto the lifting first (few steps in the test preset)
    from ovs3d.pipeline import segment_stage

    warm = preset("segment", "test", mode="improved", init="instant", iterations=2)
    warm.lift.init_steps = 5
    summary = segment_stage(out / "reconstruct", tmp_path / "warm", warm, config.extract, scene_root=scene,
                            progress=False)
    assert summary["warm_start"]["distill"]["steps"] == 5
    assert summary["warm_start"]["distill"]["last_loss"] < summary["warm_start"]["distill"]["first_loss"]
    assert isinstance(load_run(tmp_path / "warm")[0], SemanticField)
