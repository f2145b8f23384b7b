"""Side by side with an earlier commit: the same benchmarks run on this tree and on ``--baseline`` in one
run, alternating, so a refactor can show that behaviour (seeded figures) and speed are unchanged.

The baseline is checked out as a git worktree (``--baseline-dir``, made once) and each benchmark runs
in a child process with that tree first on ``PYTHONPATH``, writing into its own ``bench/results``; the
current tree's run writes into ours. Compared:

    demo         (``bench.demo --no-modes``) 3D-OVS mIoU and accuracy under both label rules, the 2D
                 teachers, stage-1 PSNR (seeded: equal to 3 decimals), wall seconds
    reconstruct  (``bench.reconstruct --part small --threads 1``) seconds per iteration
    segment      (``bench.segment --sections paper_small paper``) seconds per iteration after the joint start

Writes ``bench/results/compare.json``: both figures, the ratio current / baseline, and the checks.

    python -m bench.compare --baseline 387aee8 [--benches demo reconstruct segment] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import RESULTS_DIR, write_result

HERE = Path(__file__).resolve().parents[1]
BENCHES = {
    "demo": lambda work: ["bench.demo", "--no-modes", "--out", str(work / "demo")],
    "reconstruct": lambda work: ["bench.reconstruct", "--part", "small", "--threads", "1", "--work",
                                 str(work / "reconstruct")],
    "segment": lambda work: ["bench.segment", "--sections", "paper_small", "paper"],
}


def figures(name: str, result: dict) -> dict[str, float]:
    """The compared figures of one benchmark's JSON."""
    if name == "demo":
        r3d, teachers = result["result_3d"], result["teachers_2d"]
        return {"miou_relevancy_labels": r3d["3dovs"]["miou"], "accuracy_relevancy_labels": r3d["3dovs"]["accuracy"],
                "miou_cosine_labels": r3d["3dovs_cosine_labels"]["miou"],
                "accuracy_cosine_labels": r3d["3dovs_cosine_labels"]["accuracy"],
                "teacher_miou_cosine": teachers["teacher_2d"]["miou"],
                "teacher_miou_relevancy": teachers["teacher_2d_relevancy"]["miou"],
                "stage1_psnr": float(result["stages"]["reconstruct"]["metric"].split()[1]),
                "wall_seconds": result["wall_seconds"], "stage2_s_per_iter": result["stage2_s_per_iter"]}
    if name == "reconstruct":
        small = result["parts"]["small"]
        return {"s_per_iter": small["seconds_per_iteration"], "final_level_s_per_iter": small["final_level"]["seconds_per_iteration"]}
    return {f"{section}_s_per_iter": result[section]["s_per_iter_after_joint"] for section in ("paper_small", "paper")}


SPEED = {"wall_seconds", "stage2_s_per_iter", "s_per_iter", "final_level_s_per_iter", "paper_small_s_per_iter",
         "paper_s_per_iter"}


def run_one(tree: Path, name: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    start = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", *BENCHES[name](work)], cwd=tree, env=env)
    if code != 0:
        raise SystemExit(f"bench compare: {name} failed in {tree} (exit {code})")
    result = json.loads((tree / "bench" / "results" / f"{name}.json").read_text())
    return {"figures": figures(name, result), "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--baseline-dir", type=Path, default=HERE.parent / "ovs3d-baseline",
                        help="worktree of the baseline (beside this repo, so that ../shared is found from it too)")
    parser.add_argument("--benches", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--work", type=Path, default=Path("/tmp/ovs3d-bench-compare"))
    args = parser.parse_args()
    if not (args.baseline_dir / "ovs3d").is_dir():
        subprocess.check_call(["git", "worktree", "add", "--detach", str(args.baseline_dir), args.baseline], cwd=HERE)
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"], cwd=args.baseline_dir, text=True).strip()
    rows = {}
    for name in args.benches:
        print(f"bench compare: {name} on the baseline {commit[:7]} ...", flush=True)
        old = run_one(args.baseline_dir, name, args.work / "baseline")
        print(f"bench compare: {name} on this tree ...", flush=True)
        new = run_one(HERE, name, args.work / "current")
        checks = {}
        for key, value in new["figures"].items():
            before = old["figures"][key]
            if key in SPEED:
                checks[key] = {"ratio_current_over_baseline": value / before, "within_5_percent": abs(value / before - 1) <= 0.05}
            else:
                checks[key] = {"equal_to_3_decimals": round(value, 3) == round(before, 3), "difference": value - before}
        rows[name] = {"baseline": old["figures"], "current": new["figures"], "checks": checks}
        print(json.dumps(rows[name], indent=1), flush=True)
        previous = RESULTS_DIR / "compare.json"
        merged = json.loads(previous.read_text()).get("benches", {}) if previous.is_file() else {}
        write_result("compare", {"baseline_commit": commit, "benches": {**merged, name: rows[name]}})


if __name__ == "__main__":
    main()
