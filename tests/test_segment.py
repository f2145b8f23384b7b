"""Stage-2 trainer tests: a tiny analytic setup, schedule, skipping, legacy configs, kill and resume."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ovs3d.config import to_plain
from ovs3d.features.cache import FeatureMaps
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF
from ovs3d.runs.record import RunRecord
from ovs3d.runs.store import read_run
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.rayspace import BoxSpace
from ovs3d.train.configs import preset as stage_preset
from ovs3d.train.legacy_config import legacy_samples_per_ray, read_legacy_config
from ovs3d.train.loop import train_loop
from ovs3d.train.segment import SegmentTrainer
from ovs3d.train.segment_data import SegmentationData, draw_clip_pixels


def preset(name: str, **overrides):
    """A stage-2 preset (``train.configs.preset("segment", ...)``)."""
    return stage_preset("segment", name, **overrides)


def tiny_record(field: SemanticField, config, data: SegmentationData) -> RunRecord:
    """The stage-2 run record a trainer saves with its checkpoints (what ``train.segment.segment`` builds)."""
    h, w = data.clip_hw
    return RunRecord(stage="segment", scene="/nonexistent/tiny", space=field.field.space.to_dict(), step=0.05,
                     width=w, height=h, iteration=0, complete=False, config=to_plain(config),
                     arch=field.field.arch(), semantic=to_plain(field.config),
                     classes=[f"class {i}" for i in range(data.text.shape[0])])


def make_trainer(field: SemanticField, data: SegmentationData, config, out) -> SegmentTrainer:
    return SegmentTrainer(field, data, config, out, torch.device("cpu"), tiny_record(field, config, data))


def run(trainer: SegmentTrainer, stop_after: int | None = None):
    """Train with the shared loop (``train.loop.train_loop``), as ``train.segment.segment`` does."""
    cfg = trainer.config
    return train_loop(trainer, trainer.out, "segment", cfg.checkpoint_every, cfg.log_every, progress=False,
                      stop_after=stop_after)


def tiny_setup(mode: str = "faithful", seed: int = 0):
    """A TensoRF with a dense slab of density in a [-1, 1]^3 box, two cameras at z = 3 looking down -z,
    random CLIP maps at 8x6 and DINO maps of 4x4 tokens (32x32 pixels)."""
    g = torch.Generator().manual_seed(seed)
    base = TensoRF(BoxSpace(box=((-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))), (8, 8, 8), generator=g)  # world rays
    with torch.no_grad():
        for p in base.density_grid.planes:
            p.fill_(1.0)
        for line in base.density_grid.lines:
            line.fill_(0.2)
    field = SemanticField(base, SemanticConfig(mode=mode), generator=g)
    c2w = torch.zeros(2, 3, 4)
    c2w[:, :, :3] = torch.eye(3)
    c2w[:, 2, 3] = 3.0
    c2w[1, 0, 3] = 0.2
    cams = Cameras.from_focal(c2w, 8.0, 8, 6)
    rng = np.random.default_rng(seed)
    clip = FeatureMaps.from_arrays([rng.standard_normal((3, 512, 3, 4)).astype(np.float16) for _ in range(2)],
                                   encoder="random")
    dino = FeatureMaps.from_arrays([rng.standard_normal((16, 4, 4)).astype(np.float16) for _ in range(2)],
                                   encoder="random")
    text = torch.nn.functional.normalize(torch.randn(4, 512, generator=g), dim=-1)
    data = SegmentationData(clip=clip, dino=dino, views=[0, 1], rgb=rng.random((2, 6, 8, 3), dtype=np.float32),
                            text=text, clip_cameras=cams, dino_cameras=Cameras.from_focal(c2w, 32.0, 32, 32))
    return field, data


def test_pixel_draws_are_a_permutation_per_epoch():
    a = torch.cat([draw_clip_pixels(2, 3, 4, 5, it, seed=1) for it in range(5)])  # 25 draws over 24 pixels
    assert sorted(a[:24].tolist()) == list(range(24))
    assert torch.equal(draw_clip_pixels(2, 3, 4, 5, 3, seed=1), a[15:20])


@pytest.mark.parametrize("mode", ["faithful", "improved"])
def test_training_runs_and_reduces_feature_loss(tmp_path, mode):
    field, data = tiny_setup(mode)
    cfg = preset("test", mode=mode, iterations=30, joint_start_iter=10, batch_size=48, lr_network=3e-3,
                 checkpoint_every=100)
    trainer = make_trainer(field, data, cfg, tmp_path)
    first = trainer.train_step()
    assert set(first) >= {"feature_loss", "relevancy_loss", "dino_pos_loss", "dino_neg_loss", "loss"}
    assert "rgb_mse" not in first
    summary = run(trainer)
    assert summary.complete and "rgb_mse" in summary.last
    assert summary.last["feature_loss"] < first["feature_loss"]
    names = [g["name"] for g in trainer.optimizer.param_groups]
    assert "app_grids" in names  # fresh optimiser with appearance after joint_start_iter
    assert (tmp_path / "checkpoint.safetensors").is_file() and (tmp_path / "tb").is_dir()


@pytest.mark.parametrize("mode", ["faithful", "improved"])
def test_selection_learns_from_feature_loss_only_in_faithful_mode(tmp_path, mode):
    field, data = tiny_setup(mode)
    cfg = preset("test", mode=mode, relevancy_weight=0.0, dino_pos_weight=0.0, dino_neg_weight=0.0)
    trainer = make_trainer(field, data, cfg, tmp_path)
    trainer.train_step()
    grads = [p.grad for p in [*trainer.model.selection_grid.planes, *trainer.model.selection_grid.lines]]
    moved = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert moved == (mode == "faithful")


def test_zero_weights_skip_branches(tmp_path):
    field, data = tiny_setup()
    cfg = preset("test", relevancy_weight=0.0, dino_pos_weight=0.0, dino_neg_weight=0.0)
    logs = make_trainer(field, data, cfg, tmp_path).train_step()
    assert set(logs) == {"feature_loss", "loss"}


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    cfg = preset("test", iterations=8, joint_start_iter=3, checkpoint_every=2)
    field, data = tiny_setup()
    straight = make_trainer(field, data, cfg, tmp_path / "a")
    run(straight)
    field, data = tiny_setup()
    killed = make_trainer(field, data, cfg, tmp_path / "b")
    run(killed, stop_after=5)  # checkpoint at 4, iteration 5 lost with the "kill"
    field, data = tiny_setup()
    resumed = make_trainer(field, data, cfg, tmp_path / "b")
    assert resumed.load() and resumed.iteration == 4
    run(resumed)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_legacy_config(tmp_path):
    path = tmp_path / "bed.txt"
    path.write_text("dataset_name = llff\ndatadir = data/bed\nn_iters = 15000\ndino_neg_weight = 0.22\n"
                    "N_voxel_init = 2097156\nmystery_key = 3\n# comment\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = read_legacy_config(path, preset("cpu"))
    assert cfg.dino_neg_weight == 0.22 and cfg.iterations == 15000 and cfg.samples_per_ray == 482
    assert [str(w.message) for w in caught] == [f"{path}: unknown key 'mystery_key' ignored"]
    assert legacy_samples_per_ray(2097156) == 482


# ---- the verbs end to end on a tiny synthetic scene ---------------------------------------------------

def fake_stage1(scene: Path, run: Path) -> None:
    """A stage-1 run folder holding an untrained field with a uniform density slab (stands in for
    `ovs3d reconstruct`, whose own tests train it; stage 2 only needs its checkpoint layout)."""
    from ovs3d.runs.load import field_sections
    from ovs3d.runs.store import write_run
    from ovs3d.scene.rayspace import NDCSpace
    from ovs3d.train.schedule import marching_step

    space = NDCSpace()
    base = TensoRF(space, (16, 16, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in base.density_grid.planes:
            p.fill_(1.0)
        for line in base.density_grid.lines:
            line.fill_(0.05)
    record = RunRecord(stage="reconstruct", scene=str(Path(scene).resolve()), space=space.to_dict(),
                       step=marching_step(space.box_tensor(), 48), width=32, height=24, iteration=0, complete=True,
                       config=to_plain(stage_preset("reconstruct", "test")), arch=base.arch())
    run.mkdir(parents=True, exist_ok=True)
    write_run(run, record, field_sections(base))


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A 3-view 32x24 synthetic scene and a fake stage-1 run beside it."""
    from ovs3d.scene.synthetic import make_synthetic_scene

    root = tmp_path_factory.mktemp("segment_cli")
    scene = make_synthetic_scene(root / "scene", n_views=3, width=32, height=24, n_annotated=2, supersample=1)
    fake_stage1(scene, root / "stage1")
    return root, scene


BUILTIN = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin",
           "--extract.pyramid.stride-divisor", "1"]


def test_verbs_segment_test_query(tiny_runs, capsys):
    from ovs3d.cli.main import entrypoint

    root, scene = tiny_runs
    run = root / "stage2"
    entrypoint(["segment", "--run", str(root / "stage1"), "--out", str(run), "--preset", "test",
                "--segment.iterations", "4", *BUILTIN])
    assert "4 iterations" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an existing run without --resume is refused
        entrypoint(["segment", "--run", str(root / "stage1"), "--out", str(run), "--preset", "test", *BUILTIN])
    entrypoint(["segment", "--run", str(root / "stage1"), "--out", str(run), "--preset", "test",
                "--segment.iterations", "6", "--resume", *BUILTIN])
    record, _ = read_run(run, stage="segment")
    assert record.iteration == 6 and record.complete and record.format == "ovs3d-run-2"
    assert record.builtin_encoders and record.inputs["stage1"] == str((root / "stage1").resolve())
    entrypoint(["test", "--run", str(run), "--test.video-frames", "2"])
    printed = capsys.readouterr().out
    assert "3D-OVS protocol" in printed and "per-query protocol" in printed and "teacher_2d" in printed
    assert "built-in" in printed
    import json

    metrics = json.loads((run / "test" / "metrics.json").read_text())
    assert metrics["iteration"] == 6 and metrics["metrics_computed"] and metrics["builtin_encoders"]
    assert 0 <= metrics["3dovs"]["miou"] <= 1 and len(metrics["3dovs"]["views"]) == 2
    assert metrics["label_rule"] == "cosine" and "ours_3d_relevancy_labels" in metrics["reference"]
    assert {"teacher_2d", "teacher_2d_relevancy"} <= set(metrics["reference"])
    assert sorted(p.name for p in (run / "test" / "segmentations_test").iterdir()) == ["000.png", "002.png"]
    assert (run / "test" / "segmentations_path").is_dir() and (run / "test" / "classes_color.png").is_file()
    entrypoint(["query", "--run", str(run), "--text", "red ball", "--text", "a shiny green thing", "--view", "1"])
    assert "ms per query" in capsys.readouterr().out
    import hashlib

    stem = f"a_shiny_green_thing_{hashlib.sha1(b'a shiny green thing').hexdigest()[:6]}"  # text + 6 hex of its SHA-1
    assert (run / "query" / f"{stem}_001_overlay.png").is_file() and (run / "query" / f"{stem}_001.png").is_file()
    assert (run / "feature_cache" / "001.npy").is_file()


def test_label_rules_cosine_and_relevancy():
    """Class 0 is closer to every pixel (an offset), class 1 peaks on the right half: argmax of the
    cosine labels everything 0; the per-class min-max relevancy recovers the right half."""
    from ovs3d.render.labels import label_pixels

    right = torch.zeros(4, 6)
    right[:, 3:] = 1.0
    noise = torch.rand(4, 6, generator=torch.Generator().manual_seed(0))
    cosines = torch.stack([0.9 + 0.01 * noise * (1 - right), 0.5 + 0.3 * right])  # [C=2, H=4, W=6]
    cosine_labels, relevancy_labels = label_pixels(cosines, "cosine"), label_pixels(cosines, "relevancy")
    assert cosine_labels.dtype == relevancy_labels.dtype == torch.long and cosine_labels.shape == (4, 6)
    assert torch.equal(cosine_labels, torch.zeros(4, 6, dtype=torch.long))
    assert torch.equal(relevancy_labels, right.long())
    with pytest.raises(ValueError):
        label_pixels(cosines, "softmax")


def test_test_without_ground_truth_says_no_metrics(tiny_runs, tmp_path):
    import shutil

    from ovs3d.eval.segment_eval import TestConfig, run_test

    root, scene = tiny_runs
    bare = tmp_path / "bare"
    shutil.copytree(scene, bare, ignore=shutil.ignore_patterns("features"))
    for folder in (bare / "segmentations").iterdir():
        if folder.is_dir():
            shutil.rmtree(folder)
    (bare / "segmentations" / "classes.txt").unlink()
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig
    from ovs3d.features.pyramid import PyramidConfig
    from ovs3d.pipeline import segment_stage

    extract = ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"),
                            pyramid=PyramidConfig(stride_divisor=1))
    segment_stage(root / "stage1", tmp_path / "run", preset("test", iterations=2), extract, scene_root=bare,
                  classes=["red ball", "grey stone wall"], progress=False)
    out = run_test(tmp_path / "run", config=TestConfig(video_frames=0))
    assert "no metrics were computed" in (out.out / "results.txt").read_text()
    assert len(out.overlays) == 3  # every view rendered


@pytest.mark.slow
def test_real_encoder_path_random_vit_b16_and_dino_b8(tiny_runs, tmp_path):
    """Stage 2 + test through open_clip ViT-B/16 and timm DINO ViT-B/8 loaded from random-weight files."""
    open_clip = pytest.importorskip("open_clip")
    timm = pytest.importorskip("timm")
    import shutil

    from safetensors.torch import save_file

    from ovs3d.eval.segment_eval import TestConfig, run_test
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig
    from ovs3d.features.pyramid import PyramidConfig
    from ovs3d.pipeline import segment_stage

    root, scene = tiny_runs
    copy = tmp_path / "scene"
    shutil.copytree(scene, copy, ignore=shutil.ignore_patterns("features"))
    torch.manual_seed(0)
    save_file(open_clip.create_model("ViT-B-16", force_quick_gelu=True).state_dict(), tmp_path / "clip.safetensors")
    save_file(timm.create_model("vit_base_patch8_224.dino", pretrained=False, num_classes=0).state_dict(),
              tmp_path / "dino.safetensors")
    extract = ExtractConfig(clip=ClipConfig(weights=tmp_path / "clip.safetensors"),
                            dino=DinoConfig(weights=tmp_path / "dino.safetensors"),
                            pyramid=PyramidConfig(divisors=(2, 3, 4), stride_divisor=1))
    summary = segment_stage(root / "stage1", tmp_path / "run", preset("test", iterations=3), extract,
                            scene_root=copy, progress=False)
    assert summary["complete"] and "ViT-B-16" in summary["encoders"]["clip"]
    assert "dino" in summary["encoders"]["dino"].lower()
    result = run_test(tmp_path / "run", config=TestConfig(video_frames=0))
    assert result.metrics["metrics_computed"] and not result.metrics["builtin_encoders"]


MEASURED_MIOU = 0.8244
"""3D-OVS mIoU measured at 15:45 UTC on 2026-11-28 with exactly the chain below (accuracy 0.964; the 2D
teacher's own argmax on the same views: mIoU 0.788, accuracy 0.952). In faithful mode the same chain
measured 0.666, below the teacher. The floor guards against regressions."""


@pytest.mark.slow
def test_synthetic_scene_segmentation_floor(tmp_path):
    """The acceptance measurement, reproduced: synthetic scene (seed 0, 24 views, 160x120), stage 1 = the
    stage-1 `test` preset at 1024 rays, 32^3 -> 72^3, upsampling at 80/160, alpha mask at 120, lr decay
    over 400 iterations, stopped at 200; stage 2 = `cpu` preset (improved), 60 iterations, joint from 30, FDA off;
    builtin encoders."""
    import dataclasses

    from ovs3d.eval.segment_eval import TestConfig, run_test
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig
    from ovs3d.pipeline import segment_stage
    from ovs3d.scene.synthetic import make_synthetic_scene
    from ovs3d.train.configs import RECONSTRUCT_PRESETS
    from ovs3d.train.reconstruct import reconstruct

    scene = make_synthetic_scene(tmp_path / "scene", seed=0)
    stage1 = dataclasses.replace(RECONSTRUCT_PRESETS["test"], n_iters=200, lr_decay_iters=400, batch_size=1024,
                                 n_voxel_init=32 ** 3, n_voxel_final=72 ** 3, upsample_iters=(80, 160),
                                 alpha_mask_iters=(120, 240), checkpoint_every=100, video_frames=0,
                                 render_eval=False)
    reconstruct(scene, tmp_path / "stage1", stage1, progress=False)
    extract = ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"))
    stage2 = preset("cpu", iterations=60, joint_start_iter=30, dino_pos_weight=0.0, dino_neg_weight=0.0)  # FDA off with the built-in DINO slot, as in the demo
    segment_stage(tmp_path / "stage1", tmp_path / "stage2", stage2, extract, progress=False)
    metrics = run_test(tmp_path / "stage2", config=TestConfig(video_frames=0)).metrics
    teacher = metrics["reference"]["teacher_2d"]["3dovs"]
    print(f"3D mIoU {metrics['3dovs']['miou']:.4f} acc {metrics['3dovs']['accuracy']:.4f}; "
          f"2D teacher mIoU {teacher['miou']:.4f} acc {teacher['accuracy']:.4f}")
    assert metrics["3dovs"]["miou"] >= MEASURED_MIOU - 0.05
