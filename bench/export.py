"""``ovs3d export`` against exact geometry, and its speed.

On the synthetic scene (``ovs3d.scene.synthetic``: five analytic objects on a floor before a wall, their
true shapes in ``scene.json``) a stage-2 run is made per seed with the built-in encoders (``--preset demo``:
``ovs3d demo --seed S --builtin``, the demo's scaled cpu presets; ``--preset cpu``: ``ovs3d run --preset cpu``
with the FDA term off, as the demo does for the built-in DINO slot), exported (``export all``), and the
exported ``points.ply``, read back, is scored per object class k:

* precision: of the points labelled k, the fraction inside object k or within one voxel of its surface
  (signed distance to the analytic solid <= tol, tol = the world length of one field grid cell at that
  point: NDC cells grow with depth);
* recall: of object k's observed true surface (the exact first hits of every pixel-centre ray of the
  training views, de-duplicated on a 0.02-unit grid; a forward-facing capture never sees the bottom or
  the back), the fraction within tol of a point labelled k;
* centroid: the distance of the class-k points' centroid to the true object centre (and to the centroid
  of its observed surface), over the scene extent (diagonal of the box of every observed true point).

Targets: mean precision >= 0.90, mean recall >= 0.80, centroid < 5 % of the extent, over >= 3 seeds.
Then export times: on each run, and on a statue_504 stage-2 run (``--statue``, ``make_statue_run``).
Run: ``python -m bench.export [--seeds 0 1 2] [--preset demo|cpu] [--work DIR] [--statue] [--threads 1]``.
Writes ``bench/results/export.json`` and the picture ``docs/export_points.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import write_result

WORK = Path("/tmp/ovs3d-bench-export")
PICTURE = Path(__file__).resolve().parents[1] / "docs" / "export_points.png"
OBJECTS = 5
TRUTH_GRID = 0.02


def yaw(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def signed_distance(prim: dict, p: np.ndarray) -> np.ndarray:
    """Signed distance [M] of points p [M, 3] to a primitive of ``ovs3d.scene.raytrace`` (negative inside)."""
    shape = prim["shape"]
    if shape == "plane":
        return (p - np.asarray(prim["point"])) @ np.asarray(prim["normal"])
    if shape == "sphere":
        return np.linalg.norm(p - np.asarray(prim["center"]), axis=1) - prim["radius"]
    if shape == "box":
        q = np.abs((p - np.asarray(prim["center"])) @ yaw(prim["yaw"])) - np.asarray(prim["half_size"])
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    rel = p - np.asarray(prim["base"])
    rho, y = np.hypot(rel[:, 0], rel[:, 2]), rel[:, 1]
    r, h = prim["radius"], prim["height"]
    if shape == "cylinder":
        q = np.stack([rho - r, np.abs(y - h / 2) - h / 2], 1)
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(1), 0)
    # cone: distance in the (rho, y) half-plane to the triangle (0, 0), (r, 0), (0, h)
    pts = np.stack([rho, y], 1)

    def to_segment(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ab = b - a
        t = np.clip(((pts - a) @ ab) / (ab @ ab), 0, 1)
        return np.linalg.norm(pts - (a + t[:, None] * ab), axis=1)

    d = np.minimum(to_segment(np.array([0.0, 0.0]), np.array([r, 0.0])), to_segment(np.array([r, 0.0]), np.array([0.0, h])))
    inside = (y >= 0) & (rho <= r * (1 - y / h))
    return np.where(inside, -d, d)


def true_centre(prim: dict) -> np.ndarray:
    """The centroid of the solid: sphere and box centre, cylinder mid-axis, cone a quarter up its axis."""
    if "center" in prim:
        return np.asarray(prim["center"], dtype=np.float64)
    lift = prim["height"] / (2 if prim["shape"] == "cylinder" else 4)
    return np.asarray(prim["base"], dtype=np.float64) + np.array([0.0, lift, 0.0])


def observed_surface(meta: dict, views: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(points [M, 3], primitive index [M]) of the exact pixel-centre hits of ``views``, one per 0.02 cell."""
    from ovs3d.scene.raytrace import first_hits
    from ovs3d.scene.synthetic import pixel_rays

    cfg = meta["config"]
    points, index = [], []
    for view in views:
        o, d = pixel_rays(np.asarray(meta["cameras_c2w"][view]), meta["focal"], cfg["width"], cfg["height"])
        k, t = first_hits(meta["primitives"], o, d)
        points.append(o + t[:, None] * d)
        index.append(k)
    points, index = np.concatenate(points), np.concatenate(index)
    _, first = np.unique(np.floor(points / TRUTH_GRID).astype(np.int64), axis=0, return_index=True)
    return points[first], index[first]


def cell_tolerance(xyz: np.ndarray, run: Path, scene: Path) -> np.ndarray:
    """[M] the world length of one field grid cell at each input-frame point: the largest displacement
    of the point when its grid coordinate moves by one cell along an axis."""
    import torch

    from ovs3d.eval.segment_eval import scene_at_feature_resolution
    from ovs3d.export.frames import WorldFrame
    from ovs3d.runs.load import load_run

    model, record = load_run(run, "cpu", stage="segment")
    frame = WorldFrame.of(model.field.space, scene_at_feature_resolution(record, scene, annotations=False))
    back = frame.input_from_scene
    local = (xyz - back[:3, 3]) @ np.linalg.inv(back[:3, :3]).T
    if frame.space.name == "ndc":
        f, w, h = float(frame.cameras.fx[0]), frame.cameras.width, frame.cameras.height
        grid = np.stack([-2 * f / w * local[:, 0] / local[:, 2], -2 * f / h * local[:, 1] / local[:, 2],
                         1 + 2 / local[:, 2]], 1)
    else:
        grid = local
    units = model.field.units.double().numpy()
    here = frame.to_input(frame.space.to_scene(torch.from_numpy(grid), frame.cameras).numpy())
    moves = [np.linalg.norm(frame.to_input(frame.space.to_scene(torch.from_numpy(grid + units[a] * np.eye(3)[a]),
                                                                frame.cameras).numpy()) - here, axis=1)
             for a in range(3)]
    return np.max(moves, axis=0)


def score_export(scene: Path, run: Path, export: Path) -> dict:
    """Per-object precision, recall and centroid distance of ``export/points.ply`` (module docstring)."""
    from plyfile import PlyData
    from scipy.spatial import cKDTree

    from ovs3d.scene.synthetic import read_scene_json

    meta = read_scene_json(scene)
    prims = meta["primitives"]
    vertex = PlyData.read(str(export / "points.ply"))["vertex"]
    xyz = np.stack([vertex[a] for a in "xyz"], 1).astype(np.float64)
    label = np.asarray(vertex["label"])
    tol = cell_tolerance(xyz, run, scene)
    truth, truth_index = observed_surface(meta, list(range(meta["config"]["n_views"])))
    own = truth_index >= 0
    self_check = max(float(np.abs(signed_distance(prims[k], truth[truth_index == k])).max()) for k in range(len(prims)))
    assert self_check < 1e-6, f"the signed distances disagree with the ray tracer ({self_check})"
    extent = float(np.linalg.norm(truth[own].max(0) - truth[own].min(0)))
    rows = []
    for k, prim in enumerate(prims):
        mine = label == k
        surface = truth[truth_index == k]
        row = {"class": prim["prompt"], "points": int(mine.sum()), "true_surface_points": len(surface),
               "median_tolerance": float(np.median(tol[mine])) if mine.any() else None}
        row["precision"] = float((signed_distance(prim, xyz[mine]) <= tol[mine]).mean()) if mine.any() else 0.0
        if mine.any():
            dist, nearest = cKDTree(xyz[mine]).query(surface)
            row["recall"] = float((dist <= tol[mine][nearest]).mean())
        else:
            row["recall"] = 0.0
        if k < OBJECTS:
            centroid = xyz[mine].mean(0) if mine.any() else np.full(3, np.nan)
            row["centroid_to_centre"] = float(np.linalg.norm(centroid - true_centre(prim)) / extent)
            row["centroid_to_observed_surface_centroid"] = float(np.linalg.norm(centroid - surface.mean(0)) / extent)
        rows.append(row)
    objects = rows[:OBJECTS]

    def stat(key: str, worst) -> dict:
        values = [r[key] for r in objects]
        return {"mean": float(np.mean(values)), "worst": float(worst(values))}

    return {"extent": extent, "points": len(xyz), "per_class": rows,
            "objects": {"precision": stat("precision", min), "recall": stat("recall", min),
                        "centroid_to_centre": stat("centroid_to_centre", max)}}


def make_run(seed: int, preset: str, work: Path, threads: int) -> tuple[Path, Path, float | None]:
    """(scene, stage-2 run, seconds or None when already complete) of ``seed``: ``ovs3d demo`` (preset demo)
    or ``ovs3d run --preset cpu``, through the CLI, in ``work/<preset>-seed<seed>``."""
    folder = work / f"{preset}-seed{seed}"
    scene, outputs = folder / "scene", folder / "outputs"
    if (outputs / "segment" / "stage.json").is_file():       # stage 2 complete (the export reads nothing else)
        return scene, outputs / "segment", None
    base = [sys.executable, "-m", "ovs3d.cli.main"]
    flags = ["--threads", str(threads)]
    start = time.perf_counter()
    if preset == "demo":
        subprocess.run(base + ["demo", "--out", str(folder), "--seed", str(seed), "--builtin", *flags], check=True)
    else:
        if not (scene / "poses_bounds.npy").is_file():
            subprocess.run(base + ["make-scene", "--out", str(scene), "--seed", str(seed)], check=True)
        subprocess.run(base + ["run", "--data", str(scene), "--out", str(outputs), "--preset", "cpu",
                               "--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin",
                               "--segment.dino-pos-weight", "0", "--segment.dino-neg-weight", "0",
                               "--reconstruct.video-frames", "0", "--test.video-frames", "0", *flags], check=True)
    return scene, outputs / "segment", time.perf_counter() - start


def make_statue_run(work: Path) -> Path:
    """A statue_504 stage-2 run, the cheapest one whose export costs what a real one does: stage 1 on the
    real images at full resolution with the ``cpu`` preset's grids (48^3 -> 128^3, alpha masks), its
    schedule compressed to 300 iterations as the demo compresses it; stage 2 the ``cpu`` preset for 30
    iterations on ``bench.lifting``'s degraded ground-truth teacher (no CLIP extraction; FDA off). What
    the export's time depends on is kept: image count and resolution, the grid, the occupancy mask."""
    import dataclasses

    from bench.common import require_shared
    from bench.lifting import CLASSES, TEACHER_NAME, teacher_cache, two_class_scene
    from ovs3d.scene.load import load_scene
    from ovs3d.train.configs import preset
    from ovs3d.train.reconstruct import reconstruct
    from ovs3d.train.segment import segment
    from ovs3d.train.segment_data import prepare_data

    run1, run2 = work / "statue" / "stage1", work / "statue" / "stage2"
    if (run2 / "train_summary.json").is_file():
        return run2
    scene_root = two_class_scene(require_shared("statue_504"), work / "statue" / "scene")
    if not (run1 / "metrics.json").is_file():
        config = dataclasses.replace(preset("reconstruct", "cpu"), n_iters=300, upsample_iters=(30, 60, 100, 150),
                                     alpha_mask_iters=(50, 170), checkpoint_every=100, video_frames=0, render_eval=False)
        reconstruct(scene_root, run1, config, progress=False)
    small = load_scene(scene_root, downsample=2)
    corrupted = list(range(1, small.n_images, 3))
    clip_folder, text = teacher_cache(scene_root, work / "statue" / "teacher", small.annotations.labels, corrupted, 16)
    config = preset("segment", "cpu", iterations=30, joint_start_iter=15, dino_pos_weight=0.0, dino_neg_weight=0.0)
    data = prepare_data(load_scene(scene_root, load_annotations=False), clip_folder, None, text)
    inputs = {"scene": str(scene_root.resolve()), "classes": CLASSES, "width": small.width, "height": small.height,
              "encoders": {"clip": TEACHER_NAME, "dino": "unused"}, "builtin_encoders": True,
              "inputs": {"clip_cache": str(clip_folder.resolve()), "dino_cache": None,
                         "clip_resolution": [small.width, small.height], "clip_config": {"kind": "degraded teacher"}}}
    segment(run1, run2, config, data, inputs, device="cpu", progress=False)
    return run2


def timed_export(run: Path, out: Path, texts: list[str], threads: int) -> dict:
    """``ovs3d export all`` in a child process: its wall-clock and CPU seconds (user + system: on a shared,
    busy CPU the wall clock also counts the time the child waited for a core), the machine's load average
    before and after, and the summary it wrote."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    load_start = os.getloadavg()
    cpu_start, start = cpu(), time.perf_counter()
    args = [sys.executable, "-m", "ovs3d.cli.main", "export", "all", "--run", str(run), "--out", str(out),
            "--threads", str(threads)]
    for text in texts:
        args += ["--text", text]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((out / "export.json").read_text())
    return {"wall_seconds": time.perf_counter() - start, "cpu_seconds": cpu() - cpu_start, "threads": threads,
            "stages_seconds": summary["seconds"],
            "points": summary["points"], "bytes": sum(f["bytes"] for f in summary["files"]),
            "load_average_1_5_15": {"start": list(load_start), "end": list(os.getloadavg())}, "target_seconds": 60}


def picture(export: Path, path: Path) -> None:
    """The labelled point cloud seen from above the cameras, coloured by class (matplotlib, offscreen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from plyfile import PlyData

    from ovs3d.io.colormaps import class_colors

    classes = json.loads((export / "classes.json").read_text())["classes"]
    vertex = PlyData.read(str(export / "points.ply"))["vertex"]
    xyz = np.stack([vertex[a] for a in "xyz"], 1)
    rgb = np.stack([vertex[c] for c in ("red", "green", "blue")], 1) / 255.0
    label = np.asarray(vertex["label"])
    colors = class_colors(len(classes)) / 255.0
    shown = np.stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]], 1)                 # x right, depth, y up
    lo, hi = np.percentile(shown, [2, 98], axis=0)
    keep = ((shown >= lo) & (shown <= hi)).all(1)
    fig = plt.figure(figsize=(12, 5.2), dpi=120)
    for i, (title, c) in enumerate((("colour (radiance field)", rgb), ("label (argmax class)", colors[label]))):
        ax = fig.add_subplot(1, 2, i + 1, projection="3d")
        ax.scatter(*shown[keep].T, c=c[keep], s=1.2, linewidths=0, depthshade=False)
        ax.view_init(elev=35, azim=-75)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("-z (depth)")
        ax.set_zlabel("y")
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        ax.set_zlim(lo[2], hi[2])
        ax.set_box_aspect(hi - lo, zoom=1.25)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colors[k], label=name) for k, name in enumerate(classes)]
    fig.legend(handles=handles, loc="lower center", ncol=len(classes), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", choices=["demo", "cpu"], default="demo")
    parser.add_argument("--extra", nargs="*", default=[], help="more runs to score, as PRESET:SEED (e.g. cpu:0)")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--statue", action="store_true", help="also time the export of a statue_504 run (made once)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="export and score again the runs already scored in --work")
    args = parser.parse_args()
    runs = [(args.preset, s) for s in args.seeds] + [(p, int(s)) for p, s in (e.split(":") for e in args.extra)]
    rows = []
    for preset, seed in runs:
        stored = args.work / f"{preset}-seed{seed}" / "bench_export_row.json"
        if stored.is_file() and not args.fresh:
            rows.append(json.loads(stored.read_text()))
            continue
        scene, run, seconds = make_run(seed, preset, args.work, args.threads)
        export = args.work / f"{preset}-seed{seed}" / "export"
        timing = timed_export(run, export, ["red ball"], args.threads)
        score = score_export(scene, run, export)
        rows.append({"preset": preset, "seed": seed, "pipeline_seconds": seconds, "export": timing, **score})
        stored.write_text(json.dumps(rows[-1], indent=1))
        print(f"bench export: {preset} seed {seed}: precision {score['objects']['precision']}, recall "
              f"{score['objects']['recall']}, centroid {score['objects']['centroid_to_centre']}, export "
              f"{timing['wall_seconds']:.1f} s ({timing['cpu_seconds']:.1f} s CPU)", flush=True)
        if (preset, seed) == runs[0]:
            picture(export, PICTURE)
    if not PICTURE.is_file():
        picture(args.work / f"{runs[0][0]}-seed{runs[0][1]}" / "export", PICTURE)
    main_rows = [r for r in rows if r["preset"] == args.preset]

    def over_seeds(key: str, worst) -> dict:
        means = [r["objects"][key]["mean"] for r in main_rows]
        worsts = [r["objects"][key]["worst"] for r in main_rows]
        return {"mean": float(np.mean(means)), "worst_seed_mean": float(worst(means)), "worst_class": float(worst(worsts))}

    summary = {"precision": over_seeds("precision", min), "recall": over_seeds("recall", min),
               "centroid_to_centre": over_seeds("centroid_to_centre", max)}
    summary["targets"] = {"precision": 0.90, "recall": 0.80, "centroid_to_centre": 0.05, "export_seconds": 60}
    summary["meets"] = {"precision": summary["precision"]["mean"] >= 0.90, "recall": summary["recall"]["mean"] >= 0.80,
                        "centroid_to_centre": summary["centroid_to_centre"]["mean"] < 0.05}
    result = {"preset": args.preset, "seeds": args.seeds, "summary": summary, "runs": rows,
              "picture": str(PICTURE.relative_to(PICTURE.parents[1]))}
    stored = args.work / "statue" / "bench_export_row.json"
    if args.statue and stored.is_file() and not args.fresh:
        result["statue_504"] = json.loads(stored.read_text())
    elif args.statue:
        import torch

        torch.set_num_threads(args.threads)
        start = time.perf_counter()
        run = make_statue_run(args.work)
        result["statue_504"] = {"run_seconds": time.perf_counter() - start, "run": make_statue_run.__doc__.split(": ", 1)[1],
                                "export": timed_export(run, args.work / "statue" / "export", [], args.threads)}
        stored.write_text(json.dumps(result["statue_504"], indent=1))
    write_result("export", result)


if __name__ == "__main__":
    main()
