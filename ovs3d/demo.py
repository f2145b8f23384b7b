"""The embedded demo: synthetic scene, encoder choice, full pipeline, and where the results are."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ovs3d.errors import WeightsUnavailableError
from ovs3d.config import to_plain
from ovs3d.eval.segment_eval import TestConfig, run_test
from ovs3d.features.encoders import ClipConfig, DinoConfig
from ovs3d.features.extract import ExtractConfig
from ovs3d.features.registry import build_dense_extractor, build_image_text_encoder
from ovs3d.pipeline import PipelineConfig, StageResult, run_pipeline, run_stage, segment_metric, segment_stage, \
    summary_table, test_metric
from ovs3d.scene.synthetic import make_synthetic_scene
from ovs3d.train.configs import preset


def demo_pipeline_config(extract: ExtractConfig) -> PipelineConfig:
    """The cpu presets scaled to the demo scene (24 views of 160x120, 7 % of a 504x378 scene's pixels):
    fewer iterations, a final grid of 100^3 instead of 128^3 (the images are 3x smaller per side), the
    stage-1 grid schedule moved earlier in proportion, PSNR on every 6th view and no stage-1 video (the
    segmentation video, 20 frames at half resolution with the relevancy label rule, is the demo's).

    With the built-in DINO slot the FDA loss is off here: the demo is the fixed reference ``bench.demo``
    compares changes against, and FDA adds about 40 % to a stage-2 iteration. ``ovs3d run`` keeps it
    on; ``bench.fda`` measures what it does."""
    reconstruct = dataclasses.replace(preset("reconstruct", "cpu"), n_iters=300, n_voxel_final=100 ** 3,
                                      upsample_iters=(30, 60, 100, 150), alpha_mask_iters=(50, 170),
                                      checkpoint_every=100, video_frames=0, eval_every=6)
    segment = dataclasses.replace(preset("segment", "cpu"), iterations=200, joint_start_iter=70, checkpoint_every=50)
    if extract.dino.kind == "builtin":
        segment = dataclasses.replace(segment, dino_pos_weight=0.0, dino_neg_weight=0.0)
    return PipelineConfig(preset="cpu", extract=extract, reconstruct=reconstruct, segment=segment,
                          test=TestConfig(video_frames=20, video_downsample=2.0, labels="relevancy"))


def choose_encoders(extract: ExtractConfig, force_builtin: bool, device: torch.device) -> tuple[ExtractConfig, str]:
    """``extract``'s encoders when both load (local file, hub cache or download), else the built-in
    encoders; returns the config to use and one line saying which and why."""
    builtin = dataclasses.replace(extract, clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"))
    if force_builtin:
        return builtin, ("encoders: built-in weight-free colour/texture encoders (asked for with --builtin); "
                         "they are NOT CLIP or DINO")
    try:
        build_image_text_encoder(extract.clip, device)
        build_dense_extractor(extract.dino, device)
    except WeightsUnavailableError as exc:
        reason = str(exc).split(". Fix:")[0]
        return builtin, (f"encoders: CLIP/DINO weights unavailable ({reason}); using the built-in weight-free "
                         "colour/texture encoders instead, which are NOT CLIP or DINO")
    return extract, "encoders: CLIP ViT-B/16 (openai) and DINO ViT-B/8 (extraction on a CPU takes long)"


def instant_rows(scene: Path, outputs: Path, config: PipelineConfig, device: torch.device) -> list[StageResult]:
    """The instant stage 2 (``train/lift.py``) on the pipeline's stage 1 and caches, and its test, into
    ``outputs/segment-instant`` and ``outputs/test-instant`` (skipped when complete with the same settings)."""
    segment = dataclasses.replace(config.segment, mode="instant")
    stage2, test = outputs / "segment-instant", outputs / "test-instant"
    stage1 = outputs / "reconstruct"
    rows = [run_stage("segment (instant)", stage2, {"stage1": str(stage1.resolve()), **to_plain(segment)},
                      lambda _resume: segment_stage(stage1, stage2, segment, config.extract, scene_root=scene,
                                                    device=device),
                      segment_metric, print, after=(outputs / "features", stage1))]
    test_config = dataclasses.replace(config.test, video_frames=0)
    rows.append(run_stage("test (instant)", test, {"segment": str(stage2.resolve()), **to_plain(test_config)},
                          lambda _resume: run_test(stage2, test, scene, test_config, device=device).metrics,
                          test_metric, print, after=(stage2,)))
    return rows


def run_demo(out: Path, seed: int = 0, extract: ExtractConfig | None = None, force_builtin: bool = False,
             device: torch.device | str = "cpu", instant: bool = False) -> list:
    """Make ``out/scene`` (once), run the scaled cpu-preset pipeline into ``out/outputs`` and print the summary;
    with ``instant``, also the training-free stage 2 and its test (rows marked ``(instant)``).

    The overlays and the video (at half the scene's resolution) use the relevancy label rule; the metrics
    report both rules (``python -m bench.demo`` records them)."""
    start = time.perf_counter()
    device = torch.device(device)
    scene = out / "scene"
    if not (scene / "poses_bounds.npy").exists():
        print(f"making the synthetic scene -> {scene}")
        make_synthetic_scene(scene, seed=seed)
    else:
        print(f"synthetic scene already made: {scene}")
    extract, line = choose_encoders(extract or ExtractConfig(), force_builtin, device)
    print(line)
    config = demo_pipeline_config(extract)
    rows = run_pipeline(scene, out / "outputs", config, device=device)
    if instant:
        rows += instant_rows(scene.resolve(), out / "outputs", config, device)
    test = out / "outputs" / "test"
    print()
    print(summary_table(rows))
    print()
    print(f"overlays:    {test / 'segmentations_test'}")
    print(f"video:       {next(iter(sorted((test / 'segmentations_path').glob('video.*'))), 'none')}")
    print(f"metrics:     {test / 'metrics.json'} (and results.txt)")
    print(f"demo finished in {time.perf_counter() - start:.0f} s")
    return rows
