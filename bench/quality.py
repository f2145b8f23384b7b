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
[--threads 2] [--work DIR] [--fresh]``; merges each arm into ``bench/results/quality_<layout>.json`` as it
ends (arms accumulate over invocations, each stamped with its date and CPU; the same size and seed
replaces the earlier row; ``--fresh`` starts the file anew; an arm whose run is complete in ``--work`` is
rescored, not rerun).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from bench.common import RESULTS_DIR, command_line, machine, rule_scores, write_result

RULES = ("relevancy", "cosine")
TARGET_MEAN, TARGET_MIN = 0.85, 0.80
TARGET_ARMS = {"forward": (5, 2), "360": (3, 1)}  # (seeds per size, sizes): #17 and #13
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


def measured_stamp(data: dict) -> dict:
    """When, by which command, on which CPU, with how many threads and under what load a row was measured
    (taken from the result file that held it)."""
    return {"date": data["date"], "command": data.get("command"), "cpu": data["machine"].get("cpu"), "cpu_simd": data["machine"].get("cpu_simd"),
            "threads": data.get("threads"), "load_at_start": data.get("load_at_start")}


def merged_rows(layout: str, new: dict) -> list[dict]:
    """The rows of the existing ``quality_<layout>.json`` (each stamped with its measurement) with the
    arm of ``new`` (same size and seed) replaced or added: arms accumulate over invocations."""
    path = RESULTS_DIR / f"quality_{layout}.json"
    rows = []
    if path.is_file():
        data = json.loads(path.read_text())
        rows = [row if "measured" in row else {**row, "measured": measured_stamp(data)} for row in data["runs"]]
    key = (new["width"], new["height"], new["views"], new["seed"])
    rows = [row for row in rows if (row["width"], row["height"], row["views"], row["seed"]) != key]
    return sorted([*rows, new], key=lambda row: (row["width"] * row["height"], row["views"], row["seed"]))


def record(args: argparse.Namespace, load: float, row: dict) -> None:
    """Merge ``row`` into ``bench/results/quality_<layout>.json`` and rewrite its summaries, under a lock
    so that invocations running side by side (other arms) do not lose each other's rows."""
    with open(Path(tempfile.gettempdir()) / f"ovs3d-bench-quality-{args.layout}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        row = {**row, "measured": measured_stamp({"date": now, "command": command_line(), "machine": machine(), "threads": args.threads,
                                                   "load_at_start": load})}
        rows = [row] if args.fresh else merged_rows(args.layout, row)
        by_size: dict[str, list[dict]] = {}
        for r in rows:
            by_size.setdefault(f"{r['width']}x{r['height']}x{r['views']}", []).append(r)
        summary = summarise(rows)
        seeds, sizes = TARGET_ARMS[args.layout]
        summary["meets"]["arms"] = len(by_size) >= sizes and all(len(g) >= seeds for g in by_size.values())
        write_result(f"quality_{args.layout}", {
            "layout": args.layout, "preset": "cpu", "encoders": "built-in weight-free (NOT CLIP or DINO)",
            "targets": {"mean": TARGET_MEAN, "min": TARGET_MIN, "seeds_per_size": seeds, "sizes": sizes},
            "summary": summary, "by_size": {s: summarise(g) for s, g in by_size.items()}, "runs": rows})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=["forward", "360"], default="forward")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sizes", nargs="+", default=["160x120x24"], help="WxHxV: image size and view count")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-quality"))
    parser.add_argument("--fresh", action="store_true", help="drop the arms already in the result file")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    for size in args.sizes:
        for seed in args.seeds:
            row = run_arm(args.layout, seed, size_of(size), args.work, args.threads)
            print(f"bench quality: {args.layout} {size} seed {seed}: {json.dumps(row)}", flush=True)
            record(args, load, row)
            args.fresh = False


if __name__ == "__main__":
    main()
