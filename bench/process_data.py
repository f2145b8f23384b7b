"""Benchmark ``process-data`` on 40 views of bird_360 with each mapper (incremental, global).

The 40 views are spread evenly over the full 360-degree capture (every 4.6th frame) and matched
exhaustively, so both mappers must close the loop. For each mapper: seconds per step and in total,
photos registered, and the camera-centre error against the scene's own ``poses_bounds.npy`` after a
similarity (Umeyama) alignment, relative to the camera spread. The incremental mapper is the
baseline: ``global_over_incremental`` is the ratio of total seconds in the same run, and
``mapping_global_over_incremental`` that of the mapping step alone.

Run: ``python -m bench.process_data [--max-size 1008] [--views 40]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np

from bench.common import require_shared, timer, write_result
from ovs3d.scene.align import aligned_error
from ovs3d.scene.colmap import colmap_to_ovs3d
from ovs3d.scene.colmap_sfm import read_model
from ovs3d.scene.llff import llff_to_ovs3d, read_poses_bounds
from ovs3d.scene.process_data import ProcessOptions, process_data


def run_mapper(photos: Path, work: Path, mapper: str, max_size: int, ref_centres: dict[str, np.ndarray]) -> dict:
    out = work / f"scene-{mapper}"
    log = io.StringIO()
    with timer() as t, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        report = process_data(out, images=photos, options=ProcessOptions(matching="exhaustive", mapper=mapper,
                                                                         max_size=max_size))
    model = read_model(out / "sparse" / "0")
    centres = colmap_to_ovs3d(model.cam_from_world)[:, :, 3]
    errors, spread = aligned_error(centres, np.stack([ref_centres[n] for n in model.names]))
    result = {"seconds_total": round(t["s"], 2), "seconds_per_step": report.seconds,
              "registered": len(report.registered), "unregistered": report.unregistered, "kind": report.kind,
              "image_size": report.size, "centre_error_mean_over_spread": round(float(errors.mean() / spread), 4),
              "centre_error_max_over_spread": round(float(errors.max() / spread), 4)}
    print(f"{mapper}: {result['seconds_total']} s, {result['registered']} registered, centre error mean "
          f"{result['centre_error_mean_over_spread']:.3f} / max {result['centre_error_max_over_spread']:.3f} of the spread")
    return result


def mapping_seconds(result: dict) -> float:
    """Seconds of the mapping step alone (features and matching are the same for both mappers)."""
    return next(v for k, v in result["seconds_per_step"].items() if k.startswith("mapping"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-size", type=int, default=1008)
    parser.add_argument("--views", type=int, default=40)
    args = parser.parse_args()
    bird = require_shared("bird_360")
    frames = sorted((bird / "images").iterdir())
    chosen = [frames[i] for i in np.linspace(0, len(frames) - 1, args.views).round().astype(int)]
    ref_c2w, _, _ = read_poses_bounds(bird / "poses_bounds.npy", len(frames))
    ref_centres = {p.name: c for p, c in zip(frames, llff_to_ovs3d(ref_c2w)[:, :, 3])}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-process-data-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for p in chosen:
            (photos / p.name).symlink_to(p)
        for mapper in ("incremental", "global"):
            results[mapper] = run_mapper(photos, Path(tmp), mapper, args.max_size, ref_centres)
    write_result("process_data", {
        "scene": "bird_360", "views": args.views, "max_size": args.max_size, "matching": "exhaustive",
        "mappers": results, "baseline": "incremental",
        "global_over_incremental": round(results["global"]["seconds_total"] / results["incremental"]["seconds_total"], 3),
        "mapping_global_over_incremental": round(mapping_seconds(results["global"]) / mapping_seconds(results["incremental"]), 3),
    })


if __name__ == "__main__":
    main()
