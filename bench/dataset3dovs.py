"""The 3D-OVS dataset as a benchmark: all 10 scenes run (or loaded) and scored into one table.

Per scene ``<root>/<scene>`` (LLFF layout: ``images/``, ``poses_bounds.npy``, ``segmentations/`` with the scene's
own ``classes.txt``), either

* run: ``ovs3d run`` (``pipeline.run_pipeline``) into ``<work>/<scene>``, every stage skipped when complete with
  the same settings, so a rerun only rescores; the flags after ``--`` are ``ovs3d run``'s (preset, encoders, any
  stage field); or
* load (``--runs DIR``): the completed stage-2 run ``DIR/<scene>/segment`` (an ``ovs3d run`` folder) or
  ``DIR/<scene>`` (from ``ovs3d segment`` or ``ovs3d import-checkpoint``) is scored by ``ovs3d test``
  (``eval.segment_eval.run_test``) into ``<work>/<scene>/test``.

The table: the 3D-OVS protocol (mIoU, accuracy: argmax over the scene's classes, method spec 7.2) per scene and
the mean over the 10 scenes, and the per-query protocol (both variants: min-max, and LERF relevancy >= 0.5,
``eval/segmentation.py``) on the 5 scenes later papers report (bed, bench, room, sofa, lawn) and their mean.

Dataset quirks are data (``VIEW_QUIRKS``, ``CORRECTED_LABELS``), applied through ``ovs3d test``'s own options
(``--test.view-images``, ``--test.annotations``): an annotation folder not named by its image's index is mapped
to its image when that image is in ``images/``; a scene with corrected labels present is scored against both,
as two rows (the means are given with the original labels and with the corrected ones).

Usage: ``python -m bench.dataset3dovs --root DATA [--work outputs/3dovs] [--runs DIR] [--scenes bed ...]
[--name dataset3dovs] [-- <ovs3d run flags>]``; writes ``bench/results/<name>.json`` and ``<work>/table.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

import ovs3d
from bench.common import write_result
from ovs3d.cli.main import parse
from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.eval.segment_eval import GROUND_TRUTH, TestConfig, run_test
from ovs3d.io.images import list_images
from ovs3d.pipeline import PipelineConfig, run_pipeline
from ovs3d.scene.annotations import CLASSES, image_indices, locate_masks

SCENES = ("bed", "bench", "room", "sofa", "lawn", "table", "office_desk", "blue_sofa", "snacks", "covered_desk")
PER_QUERY_SCENES = ("bed", "bench", "room", "sofa", "lawn")
"""The subset whose per-query mIoU LangSplat and later papers report (method spec section 8)."""
DOWNLOAD = "the 3D-OVS dataset (Google Drive link in the 3D-OVS README, github.com/Kunhao-Liu/3D-OVS)"


@dataclass(frozen=True)
class ViewQuirk:
    """In ``scene``, the annotation folder ``folder`` annotates the image whose file stem is ``image``."""

    scene: str
    image: str
    folder: str


VIEW_QUIRKS = (
    # Source: issue #17, and a third-party 3D-OVS evaluation script (gsplat + LSeg features) that special-cases it
    # ("Hack: To fix the bug related to 3DOVS colmap dataset"): table's image IMG_20230412_214716 has the masks of
    # folder 30, though it is not image 30 in name order. Applied only where images/ holds that file.
    ViewQuirk("table", "IMG_20230412_214716", "30"),
)
CORRECTED_LABELS = {
    # Source: issue #17; OccamLGS (insait-institute/OccamLGS, README and issue #12) found an annotation error in
    # room's masks and released corrected labels. Unpack them into <root>/room/segmentations_corrected/, laid out as
    # segmentations/ (classes.txt and one folder per view); the scene is then scored against both.
    "room": "segmentations_corrected",
}


@dataclass
class ScenePlan:
    """What one scene will be scored with: the scene folder, the stage-2 run to load (None: run the pipeline),
    its annotation folder -> image mapping and the extra ground-truth folders (name -> folder)."""

    name: str
    root: Path
    run: Path | None
    view_images: dict[str, str]
    quirks: list[str]
    extra_labels: dict[str, str]


def check_scene(name: str, root: Path, quirks: tuple[ViewQuirk, ...], corrected: dict[str, str],
                runs: Path | None) -> ScenePlan:
    """The plan of one scene after checking every input file it needs (InputError naming the file and the fix)."""
    scene = root / name
    if not (scene / "images").is_dir():
        raise InputError(scene / "images", f"scene '{name}' is missing from the dataset root",
                         f"download {DOWNLOAD} and unpack it so that <root>/{name}/images/ exists, or leave the "
                         f"scene out with --scenes")
    images = list_images(scene / "images")
    if not (scene / "poses_bounds.npy").is_file():
        raise InputError(scene / "poses_bounds.npy", "the scene has no camera poses", f"unpack {DOWNLOAD} completely")
    view_images, notes = {}, []
    for quirk in (q for q in quirks if q.scene == name):
        if any(p.stem == quirk.image for p in images):
            view_images[quirk.folder] = quirk.image
            notes.append(f"annotation folder {quirk.folder} -> image {quirk.image}")
        else:
            notes.append(f"not applied: no image {quirk.image} in images/ (folder {quirk.folder} is image {quirk.folder})")
    folders = {"original": str(GROUND_TRUTH)}
    if name in corrected and (scene / corrected[name]).is_dir():
        folders["corrected"] = corrected[name]
    for folder in folders.values():
        seg_dir = scene / folder
        located = locate_masks(seg_dir, len(images), image_indices(seg_dir, view_images, images))
        if located is None or not located[1]:
            raise InputError(seg_dir / CLASSES, "the scene has no ground truth (class list and annotated views)",
                             f"unpack the scene's {folder}/ folder from {DOWNLOAD}")
    run = None
    if runs is not None:
        run = runs / name / "segment" if (runs / name / "segment").is_dir() else runs / name
        if not (run / "config.yml").is_file():
            raise InputError(run, f"no stage-2 run of scene '{name}' here",
                             "pass --runs a folder with one completed run per scene (<runs>/<scene>/segment from "
                             "`ovs3d run`, or <runs>/<scene> from `ovs3d segment` / `ovs3d import-checkpoint`)")
    return ScenePlan(name, scene, run, view_images, notes, {k: v for k, v in folders.items() if k != "original"})


def score_row(name: str, labels: str, metrics: dict, seconds: float) -> dict:
    """One table row from a ``metrics.json`` of ``ovs3d test``."""
    lerf = metrics.get("per_query_lerf")
    return {"scene": name, "labels": labels, "views": metrics["views"], "miou": metrics["3dovs"]["miou"],
            "accuracy": metrics["3dovs"]["accuracy"], "per_query": metrics["per_query"]["miou"],
            "per_query_lerf": lerf["miou"] if lerf else None, "label_rule": metrics["label_rule"],
            "ground_truth": metrics["ground_truth"], "encoders": metrics["encoders"],
            "builtin_encoders": metrics["builtin_encoders"], "seconds": round(seconds, 1)}


def score_scene(plan: ScenePlan, work: Path, pipeline: PipelineConfig, device: torch.device | str) -> list[dict]:
    """Run (or load) and test one scene; its rows (original labels first)."""
    out = work / plan.name
    test = dataclasses.replace(pipeline.test, view_images=plan.view_images, annotations=GROUND_TRUTH)
    tick = time.perf_counter()
    if plan.run is None:
        run_pipeline(plan.root, out, dataclasses.replace(pipeline, test=test), device=device)
        stage2 = out / "segment"
        metrics = json.loads((out / "test" / "metrics.json").read_text())
    else:
        stage2 = plan.run
        metrics = run_test(stage2, out / "test", plan.root, dataclasses.replace(test, video_frames=0), device).metrics
    rows = [score_row(plan.name, "original", metrics, time.perf_counter() - tick)]
    for labels, folder in plan.extra_labels.items():
        tick = time.perf_counter()
        extra = dataclasses.replace(test, annotations=Path(folder), video_frames=0)
        metrics = run_test(stage2, out / f"test_{labels}", plan.root, extra, device).metrics
        rows.append(score_row(plan.name, labels, metrics, time.perf_counter() - tick))
    seed = (yaml.safe_load((stage2 / "config.yml").read_text()) or {}).get("seed")
    for row in rows:
        row.update(quirks=plan.quirks, run=str(stage2), segment_seed=seed)
    return rows


def mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r[key] is not None]
    return round(sum(values) / len(values), 4) if values and len(values) == len(rows) else None


def summarise(rows: list[dict], scenes: tuple[str, ...]) -> dict:
    """Means of the 3D-OVS protocol over ``scenes`` and of the per-query protocol over its 5-scene subset, with
    the original labels and, where a scene has them, its corrected ones."""
    out = {}
    for labels in ("original", "corrected"):
        chosen = [next((r for r in rows if r["scene"] == s and r["labels"] == labels),
                       next(r for r in rows if r["scene"] == s and r["labels"] == "original")) for s in scenes]
        if labels == "corrected" and all(r["labels"] == "original" for r in chosen):
            continue
        subset = [r for r in chosen if r["scene"] in PER_QUERY_SCENES]
        out[labels] = {"scenes": len(chosen), "miou": mean(chosen, "miou"), "accuracy": mean(chosen, "accuracy"),
                       "per_query_scenes": [r["scene"] for r in subset], "per_query": mean(subset, "per_query"),
                       "per_query_lerf": mean(subset, "per_query_lerf")}
    return out


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(rows: list[dict], means: dict) -> str:
    """Markdown table (figures in %)."""
    lines = ["| scene | labels | mIoU | accuracy | per-query mIoU (min-max) | per-query mIoU (LERF) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        query = r["scene"] in PER_QUERY_SCENES
        lines.append(f"| {r['scene']} | {r['labels']} | {fmt(r['miou'])} | {fmt(r['accuracy'])} | "
                     f"{fmt(r['per_query']) if query else ''} | {fmt(r['per_query_lerf']) if query else ''} |")
    for labels, m in means.items():
        lines.append(f"| mean ({labels} labels; {m['scenes']} scenes, per-query {len(m['per_query_scenes'])}) | | "
                     f"{fmt(m['miou'])} | {fmt(m['accuracy'])} | "
                     f"{fmt(m['per_query'])} | {fmt(m['per_query_lerf'])} |")
    return "\n".join(lines) + "\n"


def git_commit() -> str | None:
    """The commit of the checkout ovs3d runs from, or None (not a git checkout, no git)."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(ovs3d.__file__).parent, capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def evaluate_dataset(root: str | Path, work: str | Path, pipeline: PipelineConfig | None = None,
                     runs: str | Path | None = None, scenes: tuple[str, ...] = SCENES,
                     quirks: tuple[ViewQuirk, ...] = VIEW_QUIRKS, corrected: dict[str, str] | None = None,
                     name: str = "dataset3dovs", device: torch.device | str = "cpu") -> dict:
    """Check every scene, then run or load and score each (see the module docstring); writes
    ``bench/results/<name>.json`` and ``<work>/table.md`` and returns the result dict."""
    root, work = Path(root), Path(work)
    pipeline = pipeline or PipelineConfig()
    corrected = CORRECTED_LABELS if corrected is None else corrected
    plans = [check_scene(s, root, quirks, corrected, Path(runs) if runs is not None else None) for s in scenes]
    rows: list[dict] = []
    for plan in plans:
        print(f"bench: {plan.name}: {'loading ' + str(plan.run) if plan.run else 'ovs3d run'}", flush=True)
        rows += score_scene(plan, work, pipeline, device)
    means = summarise(rows, scenes)
    text = table(rows, means)
    work.mkdir(parents=True, exist_ok=True)
    (work / "table.md").write_text(text)
    print(text, end="")
    result = {"root": str(root), "work": str(work), "mode": "load" if runs is not None else "run",
              "runs": str(runs) if runs is not None else None, "scenes": list(scenes), "rows": rows, "mean": means,
              "versions": {"ovs3d": ovs3d.__version__, "git_commit": git_commit(), "torch": torch.__version__},
              "pipeline": to_plain(pipeline) if runs is None else None,
              "seeds": {"reconstruct": pipeline.reconstruct.seed, "segment": pipeline.segment.seed} if runs is None else None,
              "quirks": {"view_images": [dataclasses.asdict(q) for q in quirks], "corrected_labels": corrected}}
    write_result(name, result)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset3dovs", description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="dataset root holding one folder per scene")
    parser.add_argument("--work", type=Path, default=Path("outputs") / "3dovs", help="one output folder per scene")
    parser.add_argument("--runs", type=Path, help="load these completed runs (<runs>/<scene>[/segment]) instead")
    parser.add_argument("--scenes", nargs="+", default=list(SCENES), choices=SCENES)
    parser.add_argument("--name", default="dataset3dovs", help="result file bench/results/<name>.json")
    parser.add_argument("run_flags", nargs=argparse.REMAINDER, help="after --: flags of `ovs3d run`")
    args = parser.parse_args(argv)
    flags = [f for f in args.run_flags if f != "--"]
    _, config = parse(["run", "--data", str(args.root), *flags])
    pipeline = PipelineConfig(preset=config.preset, extract=config.extract, reconstruct=config.reconstruct,
                              segment=config.segment, test=config.test)
    evaluate_dataset(args.root, args.work, pipeline, args.runs, tuple(args.scenes), name=args.name,
                     device=config.runtime.apply())


if __name__ == "__main__":
    main()
