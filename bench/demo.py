"""The demo as a benchmark: wall-clock time of ``ovs3d demo`` and the segmentation it reaches.

Runs ``ovs3d demo --out <folder>`` in a child process, exactly as the README's second set-up command
(so offline it first tries CLIP and DINO and falls back to the built-in encoders; a fresh folder each
time, so every stage runs), then records from its outputs: the wall-clock time (target: under 5 minutes on 2 cores), each
stage's time, stage 2's seconds per iteration, the child's peak RSS, and both protocols of
``test/metrics.json`` for the 3D result (under the demo's relevancy label rule and the paper's cosine
rule) next to the 2D teachers' own per-view argmax on the same views
(the synthetic-scene segmentation figures). The folder is kept for ``bench.segment --sections synthetic``.

Then, on the demo's stage 1 and feature caches, stage 2 is trained in both modes (``faithful``,
``improved``) at the demo's schedule (200 iterations, joint from 70) and at the ``cpu`` preset's (600,
joint from 200), and each is tested under both label rules: the evidence for the ``cpu`` preset's mode
(``bench/results/demo_modes.json``).

Run: ``python -m bench.demo [--out /tmp/ovs3d-bench-demo] [--no-modes | --modes-only]``
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import write_result

DEMO_DIR = Path("/tmp/ovs3d-bench-demo")


def protocol_summary(result: dict) -> dict:
    """miou, accuracy, per-view mIoU and per-class IoU (mean over views) of one protocol's dict."""
    def mean(values: list) -> float | None:
        known = [v for v in values if v is not None]  # per-query: a class absent from a view is skipped
        return round(sum(known) / len(known), 4) if known else None

    per_class = [mean([row[c] for row in result["iou"]]) for c in range(len(result["classes"]))]
    return {"miou": round(result["miou"], 4), "accuracy": None if result["accuracy"] is None else round(result["accuracy"], 4),
            "miou_per_view": [round(m, 4) for m in result["miou_per_view"]], "iou_per_class": per_class}


def run(out: Path) -> dict:
    if out.exists():
        shutil.rmtree(out)
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "ovs3d.cli.main", "demo", "--out", str(out)])
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"bench demo: ovs3d demo exited with {code}")
    outputs = out / "outputs"
    stages = json.loads((outputs / "summary.json").read_text())
    metrics = json.loads((outputs / "test" / "metrics.json").read_text())
    segment = json.loads((outputs / "segment" / "train_summary.json").read_text())
    return {"wall_seconds": round(wall, 1), "target_seconds": 300, "under_target": wall < 300,
            "stages": {s["stage"]: {"seconds": round(s["seconds"], 1), "metric": s["metric"]} for s in stages},
            "stage2_s_per_iter": round(segment["s_per_iter"], 3), "stage2_iterations": segment["iterations_run"],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9, 2),
            "encoders": metrics["encoders"], "classes": metrics["classes"], "views": metrics["views"],
            "resolution": metrics["resolution"], "semantic_mode": metrics["semantic_mode"],
            "label_rule": metrics["label_rule"],
            "result_3d": {"3dovs": protocol_summary(metrics["3dovs"]),
                          "per_query": protocol_summary(metrics["per_query"]),
                          **{f"3dovs_{name[len('ours_3d_'):]}": protocol_summary(ref["3dovs"])
                             for name, ref in metrics["reference"].items() if name.startswith("ours_3d_")}},
            "teachers_2d": {name: protocol_summary(ref["3dovs"]) for name, ref in metrics["reference"].items()
                            if name.startswith("teacher")},
            "folder": str(out)}


def compare_modes(out: Path) -> list[dict]:
    """Stage 2 in each mode and schedule on the demo's stage 1 (``out/outputs/reconstruct``) and caches,
    tested under both label rules (no video); runs go to ``out/modes/<mode>-<iterations>``."""
    import torch

    from ovs3d.demo import choose_encoders, demo_pipeline_config
    from ovs3d.eval.segment_eval import TestConfig, label_rule_key, run_test
    from ovs3d.features.extract import ExtractConfig
    from ovs3d.pipeline import segment_stage

    extract, _ = choose_encoders(ExtractConfig(), force_builtin=True, device=torch.device("cpu"))  # the offline demo's
    demo_config = demo_pipeline_config(extract).segment
    rows = []
    for iterations, joint in ((200, demo_config.joint_start_iter), (600, 200)):
        for mode in ("faithful", "improved"):
            run_dir = out / "modes" / f"{mode}-{iterations}"
            shutil.rmtree(run_dir, ignore_errors=True)
            config = dataclasses.replace(demo_config, mode=mode, iterations=iterations, joint_start_iter=joint)
            tick = time.perf_counter()
            segment_stage(out / "outputs" / "reconstruct", run_dir / "segment", config, extract,
                          scene_root=out / "scene", device="cpu", progress=False)
            metrics = run_test(run_dir / "segment", run_dir / "test", out / "scene",
                               TestConfig(video_frames=0, labels="relevancy"), device="cpu").metrics
            rows.append({"mode": mode, "iterations": iterations, "joint_start_iter": joint,
                         "seconds": round(time.perf_counter() - tick, 1),
                         "relevancy_labels": protocol_summary(metrics["3dovs"]),
                         "cosine_labels": protocol_summary(metrics["reference"][label_rule_key("cosine")]["3dovs"])})
            print(f"bench demo: {mode} {iterations} it: mIoU {rows[-1]['cosine_labels']['miou']} (cosine labels), "
                  f"{rows[-1]['relevancy_labels']['miou']} (relevancy labels)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="demo folder (replaced)")
    parser.add_argument("--no-modes", action="store_true", help="skip the faithful/improved comparison")
    parser.add_argument("--modes-only", action="store_true", help="only the comparison, on an existing demo folder")
    args = parser.parse_args()
    if not args.modes_only:
        write_result("demo", run(args.out))
    if not args.no_modes:
        write_result("demo_modes", {"modes": compare_modes(args.out), "folder": str(args.out)})


if __name__ == "__main__":
    main()
