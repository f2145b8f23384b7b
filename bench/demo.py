"""The demo as a benchmark: wall-clock time of ``ovs3d demo`` and the segmentation it reaches.

Runs ``ovs3d demo --out <folder>`` in a child process, exactly as the README's second set-up command
(so offline it first tries CLIP and DINO and falls back to the built-in encoders; a fresh folder each
time, so every stage runs), then records from its outputs: the wall-clock time (target: under 5 minutes on 2 cores), each
stage's time, stage 2's seconds per iteration, the child's peak RSS, and both protocols of
``test/metrics.json`` for the 3D result (under the demo's relevancy label rule and the paper's cosine
rule) next to the 2D teachers' own per-view argmax on the same views
(the synthetic-scene segmentation figures). The folder is kept for ``bench.segment --sections synthetic``.

Run: ``python -m bench.demo [--out /tmp/ovs3d-bench-demo]``
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEMO_DIR, help="demo folder (replaced)")
    args = parser.parse_args()
    write_result("demo", run(args.out))


if __name__ == "__main__":
    main()
