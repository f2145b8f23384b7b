"""GPU benchmark, prepared for a lent accelerator: every stage at the ``paper`` and the ``default`` presets
on the synthetic scene rendered at a paper-like resolution, in one call; seconds per iteration (or per
crop / image) and peak GPU memory.

Stages, per preset (``--presets``, default both):
- extract: the paper's networks with random weights (CLIP ViT-B/16, DINO ViT-B/8; weights cannot be
  fetched on the device and do not change the cost) at the encoders' automatic precision (fp16 on
  CUDA): the CLIP hierarchy of one whole image at 504 x 378 (3453 crops) in seconds per crop, and DINO
  in seconds per image. Once, shared by both presets (extraction has no preset).
- reconstruct: stage 1 with the preset's grid schedule (128^3 -> 640^3 voxels, batch 4096) compressed
  into ``--iters1`` iterations, so the first and the final grid level are both timed;
- segment: stage 2 at the preset's batches (4096 CLIP rays + 8 DINO patches of 256x256 for paper) for
  ``--iters2`` iterations with the built-in encoders (the teacher's content does not change the cost of
  training);
- test: ``ovs3d test`` of that run (render and score the annotated views, no video), wall seconds.

``--smoke`` shrinks everything (a 160 x 120 scene, tiny grids and batches, 4 CLIP crops, a 64 x 48 DINO
input) so the script can be checked on a CPU.

Usage: ``python -m bench.gpu [--work DIR] [--iters1 80] [--iters2 30] [--presets paper default] [--smoke]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import peak_gpu_gb, peak_rss_gb, write_result


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def extract_stage(scene: Path, work: Path, smoke: bool, device: str) -> dict:
    """CLIP hierarchy of image 0 (all its crops; 4 in smoke) and DINO of image 0, random-weight networks."""
    import open_clip
    import timm
    from safetensors.torch import save_file

    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import load_image, scene_images
    from ovs3d.features.pyramid import PyramidConfig, crop_boxes, encode_boxes, extract_hierarchy
    from ovs3d.features.registry import build_dense_extractor, build_image_text_encoder

    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_file(open_clip.create_model("ViT-B-16", force_quick_gelu=True).state_dict(), work / "clip.safetensors")
    save_file(timm.create_model("vit_base_patch8_224.dino", pretrained=False, num_classes=0).state_dict(),
              work / "dino.safetensors")
    dev = torch.device(device)
    clip = build_image_text_encoder(ClipConfig(weights=work / "clip.safetensors"), dev)
    dino = build_dense_extractor(DinoConfig(weights=work / "dino.safetensors"), dev)
    path = scene_images(scene)[0]
    image = load_image(path, (504, 378), dev)
    reset_peak()
    if smoke:
        boxes = torch.cat(crop_boxes(504, 378, PyramidConfig()))[:4]
        crops = len(boxes)
        sync()
        start = time.perf_counter()
        encode_boxes(image, boxes, clip, 2)
    else:
        crops = sum(len(b) for b in crop_boxes(504, 378, PyramidConfig()))
        extract_hierarchy(image, clip, PyramidConfig())   # warm-up (cuDNN / cuBLAS autotuning)
        sync()
        start = time.perf_counter()
        extract_hierarchy(image, clip, PyramidConfig())
    sync()
    clip_s = time.perf_counter() - start
    dino_size = (64, 48) if smoke else (504, 376)
    dino_image = load_image(path, dino_size, dev)[None]
    dino.extract(dino_image)
    sync()
    start = time.perf_counter()
    dino.extract(dino_image)
    sync()
    return {"clip_precision": clip.precision, "clip_batch_size": clip.batch_size if not smoke else 2,
            "clip_crops": crops, "clip_seconds": clip_s, "clip_seconds_per_crop": clip_s / crops,
            "dino_precision": dino.precision, "dino_input": list(dino_size),
            "dino_seconds_per_image": time.perf_counter() - start, "peak_gpu_gb": peak_gpu_gb(),
            "authors_seconds_per_crop_cpu": 0.32}


def stage1(scene: Path, out: Path, iters: int, smoke: bool, device: str, name: str) -> dict:
    """Stage 1 of preset ``name`` with its schedule compressed into ``iters`` iterations."""
    from ovs3d.train.configs import preset
    from ovs3d.train.reconstruct import Reconstruction

    k = max(iters // 8, 1)
    config = dataclasses.replace(
        preset("reconstruct", name), downsample=1.0, n_iters=iters, upsample_iters=(2 * k, 3 * k, 4 * k, 5 * k),
        alpha_mask_iters=(int(2.5 * k),), render_eval=False, video_frames=0, checkpoint_every=10 ** 9)
    if smoke:
        config = dataclasses.replace(config, batch_size=256, n_voxel_init=32 ** 3, n_voxel_final=64 ** 3)
    reset_peak()
    run = Reconstruction(scene, out, config, device=device)
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        run.train_step()
        sync()
        times.append(time.perf_counter() - start)
    run.save()
    return {"preset": name, "iterations": iters, "batch_size": config.batch_size,
            "upsample_iters": list(config.upsample_iters),
            "s_per_iter_first_level": float(np.median(times[1:2 * k] or times)),
            "s_per_iter_final_level": float(np.median(times[5 * k + 1:] or times[-1:])),
            "final_reso": list(run.field.reso), "samples_per_ray": run.n_samples, "peak_gpu_gb": peak_gpu_gb()}


def stage2(scene: Path, stage1_dir: Path, out: Path, iters: int, smoke: bool, device: str, name: str) -> dict:
    """Stage 2 of preset ``name`` (built-in encoders) for ``iters`` iterations."""
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig, ResolutionConfig
    from ovs3d.pipeline import segment_stage
    from ovs3d.train.configs import preset

    extract = ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"),
                            resolution=ResolutionConfig(downsample=2.0))
    overrides = {"iterations": iters, "joint_start_iter": iters // 2, "checkpoint_every": 10 ** 9}
    if smoke:
        overrides.update(batch_size=256, patch_num=1, patch_size=64)
    reset_peak()
    summary = segment_stage(stage1_dir, out, preset("segment", name, **overrides), extract, scene_root=scene,
                            device=device, progress=False)
    return {"preset": name, "iterations": iters, "s_per_iter": summary["s_per_iter"], "peak_gpu_gb": peak_gpu_gb(),
            "encoders": summary.get("encoders")}


def test_stage(run_dir: Path, device: str) -> dict:
    """``ovs3d test`` of a stage-2 run without the video: wall seconds and the metric."""
    from ovs3d.eval.segment_eval import TestConfig, run_test

    reset_peak()
    sync()
    start = time.perf_counter()
    metrics = run_test(run_dir, config=TestConfig(video_frames=0), device=device).metrics
    sync()
    return {"seconds": time.perf_counter() - start, "miou": metrics.get("3dovs", {}).get("miou"),
            "peak_gpu_gb": peak_gpu_gb()}


def main() -> None:
    from ovs3d.scene.synthetic import make_synthetic_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-gpu"))
    parser.add_argument("--width", type=int, default=1008)
    parser.add_argument("--height", type=int, default=756)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--iters1", type=int, default=80)
    parser.add_argument("--iters2", type=int, default=30)
    parser.add_argument("--presets", nargs="+", default=["paper", "default"], choices=["paper", "default", "cpu"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.height, args.views, args.iters1, args.iters2 = 160, 120, 8, 16, 4
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scene = args.work / f"scene-{args.width}x{args.height}"
    if not (scene / "poses_bounds.npy").exists():
        make_synthetic_scene(scene, seed=0, n_views=args.views, width=args.width, height=args.height, supersample=1)
    start = time.perf_counter()
    result = {"device": device, "scene": f"synthetic {args.width}x{args.height}, {args.views} views",
              "smoke": args.smoke, "extract": extract_stage(scene, args.work / "extract", args.smoke, device)}
    for name in args.presets:
        s1_dir, s2_dir = args.work / f"stage1-{name}", args.work / f"stage2-{name}"
        for stale in (s1_dir, s2_dir):   # a fresh run per call, never a resumed one
            shutil.rmtree(stale, ignore_errors=True)
        result[name] = {"reconstruct": stage1(scene, s1_dir, args.iters1, args.smoke, device, name),
                        "segment": stage2(scene, s1_dir, s2_dir, args.iters2, args.smoke, device, name),
                        "test": test_stage(s2_dir, device)}
        print(f"bench.gpu: {name}: {result[name]}", flush=True)
    result |= {"seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(),
               "authors": {"stage1_s_per_iter_final_cpu": 25.0, "stage2_gpu_memory_readme_gb": 14}}
    write_result("gpu" if not args.smoke else "gpu_smoke", result)


if __name__ == "__main__":
    main()
