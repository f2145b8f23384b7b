"""Segmentation quality on synthetic scenes nobody tuned on, through ``ovs3d run`` as a user runs it.

Each arm is a synthetic scene (``ovs3d make-scene --layout L --seed S --width W --height H --n-views V``,
exact class masks) and one ``ovs3d run --data <scene> --preset cpu`` with both built-in encoders (the
only change from a user's command: ``--extract.clip.kind builtin --extract.dino.kind builtin``, since CLIP
and DINO weights cannot be downloaded here), each command a child process with its wall time. Scored
from the run's ``test/metrics.json``: the 3D-OVS-protocol mIoU of the 3D result under both label rules
(cosine: the paper's argmax cos(F, t_c); relevancy: argmax of the per-view min-max normalised cosines)
and of the 2D teacher under both rules on the same annotated views. Per group of arms (layout and size)
and over all: mean and minimum, and whether the 3D result is above the teacher on every arm.

Targets: issue #13 (``--layout 360``, >= 3 seeds): mIoU >= 0.85 and above the teacher under both rules;
issue #17 (forward, >= 5 seeds and >= 2 sizes): mean >= 0.85 under both rules, minimum >= 0.80, above
the teacher on every arm under both rules.

Usage: ``python -m bench.quality [--layout forward|360] [--seeds 0 1 2] [--sizes 160x120x24 ...]
[--threads 2] [--work DIR]``; writes ``bench/results/quality_<layout>.json`` after every arm (an arm whose
run is complete in ``--work`` is rescored, not rerun).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bench.common import rule_scores, write_result

RULES = ("relevancy", "cosine")
TARGET_MEAN, TARGET_MIN = 0.85, 0.80
CLI = [sys.executable, "-m", "ovs3d.cli.main"]
BUILTIN = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin"]


def size_of(text: str) -> tuple[int, int, int]:
    """``WxHxV`` -> (width, height, views)."""
    width, height, views = (int(x) for x in text.lower().split("x"))
    return width, height, views


def run_arm(layout: str, seed: int, size: tuple[int, int, int], work: Path, threads: int) -> dict:
    """Make the scene and run the cpu-preset pipeline on it through the CLI; the arm's scores and times."""
    width, height, views = size
    folder = work / f"{layout}-{width}x{height}x{views}-seed{seed}"
    scene, out = folder / "scene", folder / "outputs"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    times = {}
    if not (scene / "scene.json").is_file():
        tick = time.perf_counter()
        subprocess.run([*CLI, "make-scene", "--layout", layout, "--seed", str(seed), "--width", str(width),
                        "--height", str(height), "--n-views", str(views), "--out", str(scene), "--overwrite"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        times["make_scene_seconds"] = round(time.perf_counter() - tick, 1)
    if not (out / "test" / "metrics.json").is_file():
        tick = time.perf_counter()
        with open(folder / "run.log", "w") as log:
            subprocess.run([*CLI, "run", "--data", str(scene), "--out", str(out), "--preset", "cpu", *BUILTIN,
                            "--test.video-frames", "0"], check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        times["run_seconds"] = round(time.perf_counter() - tick, 1)
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    stage2 = yaml.safe_load((out / "segment" / "config.yml").read_text())
    scores = rule_scores(metrics)
    return {"layout": layout, "seed": seed, "width": width, "height": height, "views": views, **times,
            "ray_space": json.loads((out / "reconstruct" / "metrics.json").read_text())["space"],
            "fda_weights": [stage2["dino_pos_weight"], stage2["dino_neg_weight"]],
            **scores, "above_teacher": {r: scores[r] > scores[f"teacher_{r}"] for r in RULES}}


def summarise(rows: list[dict]) -> dict:
    """Mean and minimum per label rule (3D and teacher), and the share of arms above the teacher."""
    out = {"arms": len(rows)}
    for key in (*RULES, *(f"teacher_{r}" for r in RULES)):
        values = [r[key] for r in rows]
        out[key] = {"mean": round(sum(values) / len(values), 4), "min": round(min(values), 4)}
    out["above_teacher_on_every_arm"] = {r: all(row["above_teacher"][r] for row in rows) for r in RULES}
    out["meets"] = {"mean": all(out[r]["mean"] >= TARGET_MEAN for r in RULES),
                    "min": all(out[r]["min"] >= TARGET_MIN for r in RULES),
                    "above_teacher": all(out["above_teacher_on_every_arm"].values())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["forward", "360"], default="forward")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", default=["160x120x24"], help="WxHxV: image size and view count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-quality"))
    args = parser.parse_args()
    load = os.getloadavg()[0]
    by_size: dict[str, list[dict]] = {}
    for size in args.sizes:
        for seed in args.seeds:
            row = run_arm(args.layout, seed, size_of(size), args.work, args.threads)
            by_size.setdefault(size, []).append(row)
            print(f"bench quality: {args.layout} {size} seed {seed}: {json.dumps(row)}", flush=True)
            rows = [r for group in by_size.values() for r in group]
            write_result(f"quality_{args.layout}", {
                "layout": args.layout, "preset": "cpu", "encoders": "built-in weight-free (NOT CLIP or DINO)",
                "threads": args.threads, "load_at_start": load, "targets": {"mean": TARGET_MEAN, "min": TARGET_MIN},
                "summary": summarise(rows), "by_size": {s: summarise(g) for s, g in by_size.items()}, "runs": rows})


if __name__ == "__main__":
    main()
