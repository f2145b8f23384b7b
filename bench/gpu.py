"""GPU benchmark, prepared for a lent accelerator: both stages at the ``paper`` presets on the synthetic
scene rendered at a paper-like resolution, reporting seconds per iteration and peak GPU memory.

Stage 1 runs the paper's grid schedule (128^3 -> 640^3 voxels, batch 4096) compressed into
``--iters1`` iterations, so the first and the final grid level are both timed. Stage 2 runs the paper
batches (4096 CLIP rays + 8 DINO patches of 256x256) for ``--iters2`` iterations with the built-in
encoders (CLIP/DINO weights cannot be fetched on the device; they change neither the shapes nor the cost
of training). ``--smoke`` shrinks everything so the script can be checked on a CPU.

Usage: ``python -m bench.gpu [--work DIR] [--iters1 80] [--iters2 30] [--smoke]``.
"""

from __future__ import annotations

import argparse
import dataclasses
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


def stage1(scene: Path, out: Path, iters: int, smoke: bool, device: str) -> dict:
    """Paper-preset stage 1 with its schedule compressed into ``iters`` iterations."""
    from ovs3d.train.configs import preset
    from ovs3d.train.reconstruct import Reconstruction

    k = max(iters // 8, 1)
    config = dataclasses.replace(
        preset("reconstruct", "paper"), downsample=1.0, n_iters=iters, upsample_iters=(2 * k, 3 * k, 4 * k, 5 * k),
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
    return {"iterations": iters, "batch_size": config.batch_size, "upsample_iters": list(config.upsample_iters),
            "s_per_iter_first_level": float(np.median(times[1:2 * k] or times)),
            "s_per_iter_final_level": float(np.median(times[5 * k + 1:] or times[-1:])),
            "final_reso": list(run.field.reso), "samples_per_ray": run.n_samples, "peak_gpu_gb": peak_gpu_gb()}


def stage2(scene: Path, stage1_dir: Path, out: Path, iters: int, smoke: bool, device: str) -> dict:
    """Paper-preset stage 2 (built-in encoders) for ``iters`` iterations."""
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
    summary = segment_stage(stage1_dir, out, preset("segment", "paper", **overrides), extract, scene_root=scene,
                            device=device, progress=False)
    return {"iterations": iters, "s_per_iter": summary["s_per_iter"], "peak_gpu_gb": peak_gpu_gb(),
            "encoders": summary.get("encoders")}


def main() -> None:
    from ovs3d.scene.synthetic import make_synthetic_scene

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-gpu"))
    parser.add_argument("--width", type=int, default=1008)
    parser.add_argument("--height", type=int, default=756)
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--iters1", type=int, default=80)
    parser.add_argument("--iters2", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    args = parser.parse_args()
    if args.smoke:
        args.width, args.height, args.views, args.iters1, args.iters2 = 160, 120, 8, 16, 4
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scene = args.work / f"scene-{args.width}x{args.height}"
    if not (scene / "poses_bounds.npy").exists():
        make_synthetic_scene(scene, seed=0, n_views=args.views, width=args.width, height=args.height, supersample=1)
    start = time.perf_counter()
    s1 = stage1(scene, args.work / "stage1", args.iters1, args.smoke, device)
    s2 = stage2(scene, args.work / "stage1", args.work / "stage2", args.iters2, args.smoke, device)
    write_result("gpu" if not args.smoke else "gpu_smoke", {
        "device": device, "scene": f"synthetic {args.width}x{args.height}, {args.views} views", "smoke": args.smoke,
        "stage1_paper": s1, "stage2_paper": s2, "seconds": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(),
        "authors": {"stage1_s_per_iter_final_cpu": 25.0, "stage2_gpu_memory_readme_gb": 14}})


if __name__ == "__main__":
    main()
