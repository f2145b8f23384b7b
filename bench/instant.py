"""Instant stage 2 (training-free lifting) against trained stage 2, on the same stage 1 per arm.

Arms: the demo scene (built-in encoders, the demo's stage 1, seeds 0, 1, 2) and, with ``--statue``,
``bench.lifting``'s statue_504 with the degraded teacher (stage 1 at the ``cpu`` preset, reused from
``bench.lifting``'s work folder when complete). On each arm's stage 1, in one process:

* ``instant``: ``--segment.mode instant`` (the ``cpu`` preset's lifting settings), its wall time;
* ``trained``: the ``cpu`` preset (600 iterations, joint from 200), its wall time;
* ``refined``: the ``cpu`` preset with ``--segment.init instant`` for 25 % of the iterations (150, joint
  from 50), its wall time including the lifting and the distillation;
* ``short_random_init``: the same 25 % schedule from the random initialisation (the control that tells the
  warm start's effect from the shorter schedule's);

each tested under both label rules (3D-OVS protocol), next to the 2D teacher's own per-view argmax. FDA is
off in every stage 2 (the built-in DINO-slot affinities are not calibrated for it, as in the demo and in
``bench.lifting``). Targets: instant <= 10 % of trained time (and <= 15 s on the demo scene), instant mIoU
above the 2D teacher's on every arm (same label rule), refined mIoU >= trained mIoU.

Usage: ``python -m bench.instant [--seeds 0 1 2] [--statue] [--threads 2] [--work DIR] [--append]``; the
JSON is rewritten after every arm (``bench/results/instant.json``; ``--append`` keeps its earlier arms).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch

from bench.common import RESULTS_DIR, peak_rss_gb, rule_scores, write_result

TARGET_FRACTION = 0.10
TARGET_DEMO_SECONDS = 15.0
STATUE_ARM = "statue_504 (degraded teacher)"


def arms(stage2, folder: Path, scene: Path) -> dict:
    """Run the instant, trained and refined stage 2 (``stage2(config, out)``) into ``folder`` and test them."""
    from ovs3d.eval.segment_eval import TestConfig, run_test
    from ovs3d.train.configs import preset

    cpu = preset("segment", "cpu", dino_pos_weight=0.0, dino_neg_weight=0.0)
    quarter = cpu.iterations // 4
    short = dataclasses.replace(cpu, iterations=quarter, joint_start_iter=cpu.joint_start_iter // 4)
    configs = {"instant": dataclasses.replace(cpu, mode="instant"), "trained": cpu,
               "refined": dataclasses.replace(short, init="instant"), "short_random_init": short}
    rows = {}
    for name, config in configs.items():
        out = folder / name
        shutil.rmtree(out, ignore_errors=True)
        tick = time.perf_counter()
        summary = stage2(config, out / "segment")
        seconds = time.perf_counter() - tick
        metrics = run_test(out / "segment", out / "test", scene, TestConfig(video_frames=0, labels="relevancy"),
                           device="cpu").metrics
        rows[name] = {"seconds": round(seconds, 2), "iterations": summary["iteration"], **rule_scores(metrics)}
        if name == "instant":
            rows[name]["lift"] = {k: summary["lift"][k] for k in ("seconds", "rays", "samples", "nodes", "grid",
                                                                 "accumulator_mb", "stored_mb", "mean_selection")}
        if summary.get("warm_start"):
            rows[name]["warm_start_seconds"] = round(summary["warm_start"]["lift"]["seconds"]
                                                     + summary["warm_start"]["distill"]["seconds"], 2)
        print(f"bench instant: {folder.name} {name}: {rows[name]}", flush=True)
    instant, trained, refined = rows["instant"], rows["trained"], rows["refined"]
    fraction = instant["seconds"] / trained["seconds"]
    return {**rows, "instant_time_fraction": round(fraction, 4),
            "targets": {"instant_within_10_percent": fraction <= TARGET_FRACTION,
                        "instant_above_teacher": all(instant[r] > instant[f"teacher_{r}"] for r in ("relevancy", "cosine")),
                        "refined_at_least_trained": all(refined[r] >= trained[r] for r in ("relevancy", "cosine"))}}


def demo_stage1(seed: int, folder: Path) -> tuple[Path, Path, object, float]:
    """``folder/scene`` (the demo scene of ``seed``), its built-in feature caches and ``folder/reconstruct``
    (stage 1 at the demo's settings), made unless complete; returns (scene, stage 1, the built-in
    ExtractConfig, seconds spent here)."""
    from ovs3d.demo import demo_pipeline_config
    from ovs3d.features.encoders import ClipConfig, DinoConfig
    from ovs3d.features.extract import ExtractConfig, extract_features
    from ovs3d.scene.synthetic import make_synthetic_scene
    from ovs3d.train.reconstruct import reconstruct

    scene, stage1 = folder / "scene", folder / "reconstruct"
    extract = ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"))
    tick = time.perf_counter()
    if not (stage1 / "metrics.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        make_synthetic_scene(scene, seed=seed)
        extract_features(scene, extract, log=lambda _line: None, device="cpu")
        reconstruct(scene, stage1, demo_pipeline_config(extract).reconstruct, device="cpu", log=lambda _line: None)
    return scene, stage1, extract, time.perf_counter() - tick


def demo_arm(seed: int, work: Path) -> dict:
    """The demo scene of ``seed``, its stage 1 (the demo's settings) and the three stage 2."""
    from ovs3d.pipeline import segment_stage

    scene, stage1, extract, stage1_seconds = demo_stage1(seed, work / f"demo-seed{seed}")
    folder = work / f"demo-seed{seed}"

    def stage2(config, out):
        return segment_stage(stage1, out, config, extract, scene_root=scene, device="cpu", progress=False)

    result = arms(stage2, folder, scene)
    result["targets"]["instant_within_15_s"] = result["instant"]["seconds"] <= TARGET_DEMO_SECONDS
    return {"arm": f"demo seed {seed}", "encoders": "built-in weight-free (NOT CLIP or DINO)",
            "stage1_seconds_this_run": round(stage1_seconds, 1), **result}


def statue_arm(work: Path) -> dict:
    """statue_504 with bench.lifting's degraded teacher (its stage 1 reused when complete)."""
    from bench.lifting import CLASSES, TEACHER_NAME, builtin_dino_cache, teacher_cache, two_class_scene
    from bench.common import require_shared
    from ovs3d.runs.store import CHECKPOINT
    from ovs3d.scene.load import load_scene
    from ovs3d.train.configs import preset
    from ovs3d.train.reconstruct import reconstruct
    from ovs3d.train.segment import segment
    from ovs3d.train.segment_data import prepare_data

    source = require_shared("statue_504")
    lifting_work = Path("/tmp/ovs3d-bench-lifting")
    stage1 = lifting_work / "stage1" if (lifting_work / "stage1" / "metrics.json").is_file() else work / "statue-stage1"
    tick = time.perf_counter()
    if not (stage1 / "metrics.json").is_file():
        reconstruct(source, stage1, preset("reconstruct", "cpu", video_frames=0, render_eval=False),
                    resume=(stage1 / CHECKPOINT).is_file())
    stage1_seconds = time.perf_counter() - tick
    folder = work / "statue"
    scene_root = two_class_scene(source, folder / "statue_2class")
    small = load_scene(scene_root, downsample=2)
    corrupted = list(range(1, small.n_images, 3))
    clip_folder, text = teacher_cache(scene_root, folder / "features" / "teacher", small.annotations.labels,
                                      corrupted, 16)
    dino_folder = builtin_dino_cache(scene_root, folder / "features" / "dino", (small.width, small.height))
    data = prepare_data(load_scene(scene_root, load_annotations=False), clip_folder, dino_folder, text)
    inputs = {"scene": str(scene_root.resolve()), "classes": CLASSES, "width": small.width, "height": small.height,
              "encoders": {"clip": TEACHER_NAME, "dino": data.dino.encoder}, "builtin_encoders": True,
              "inputs": {"clip_cache": str(clip_folder.resolve()), "dino_cache": str(dino_folder.resolve()),
                         "clip_resolution": [small.width, small.height], "clip_config": {"kind": "degraded teacher"}}}

    def stage2(config, out):
        return segment(stage1, out, config, data, inputs, device="cpu", progress=False)

    return {"arm": STATUE_ARM, "teacher": TEACHER_NAME, "corrupted_views": corrupted,
            "stage1_seconds_this_run": round(stage1_seconds, 1), **arms(stage2, folder, scene_root)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2], help="demo scene seeds")
    parser.add_argument("--statue", action="store_true", help="also the statue_504 arm (degraded teacher)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-instant"))
    parser.add_argument("--append", action="store_true", help="keep the arms of bench/results/instant.json that this run does not redo")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    previous = RESULTS_DIR / "instant.json"
    rerun = {f"demo seed {seed}" for seed in args.seeds} | ({STATUE_ARM} if args.statue else set())
    kept = json.loads(previous.read_text())["arms"] if args.append and previous.is_file() else []
    results = [arm for arm in kept if arm["arm"] not in rerun]
    for seed in args.seeds:
        results.append(demo_arm(seed, args.work))
        write_result("instant", {"arms": results, "threads": args.threads, "load_at_start": load,
                                 "peak_rss_gb": peak_rss_gb()})
    if args.statue:
        results.append(statue_arm(args.work))
        write_result("instant", {"arms": results, "threads": args.threads, "load_at_start": load,
                                 "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
    main()
