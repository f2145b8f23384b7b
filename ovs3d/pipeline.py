"""The whole pipeline in one folder: extract -> reconstruct -> segment -> test (``ovs3d run``).

Layout of ``out``: ``features/`` (the extract stage's record), ``reconstruct/`` (stage-1 run),
``segment/`` (stage-2 run), ``test/`` (overlays, video, results.txt, metrics.json) and
``summary.json``. Features live in the scene's own cache (``<scene>/features/``), which rebuilds
itself when its settings change.

A stage is complete when its folder holds ``stage.json`` (written atomically, last) and the config
recorded there equals the requested one: such a stage is skipped and says so. A stage folder without
``stage.json`` was interrupted: training resumes from its last checkpoint. A stage whose config changed
is redone in a fresh folder (the old one is moved aside as ``<stage>.old-<n>``, never deleted). A
stage's config includes a digest of the records of the stages whose outputs it reads, so when one of
those runs again, every stage after it runs again too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.eval.segment_eval import LABEL_RULES, label_rule_key
from ovs3d.features.extract import ExtractConfig
from ovs3d.io.atomic import write_json_atomic
from ovs3d.train import reconstruct as stage1
from ovs3d.train import segment as stage2

PresetName = Literal["test", "cpu", "default", "paper"]
STAGE_RECORD = "stage.json"


@dataclass
class PipelineConfig:
    """Settings of ``ovs3d run``: one preset for every stage, and the encoders."""

    preset: PresetName = "cpu"
    """Preset of every stage: test (seconds), cpu (minutes on 2 cores), default (our settings, GPU), paper."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Feature extraction (encoders: --extract.clip.kind, --extract.clip.weights, --extract.dino.*)."""
    video_frames: int = 120
    """Frames of the spiral segmentation video (0: none)."""
    video_downsample: float = 1.0
    """The segmentation video is rendered at the test resolution divided by this."""
    labels: Literal["cosine", "relevancy"] = "cosine"
    """Label rule of the test stage's overlays, video and main metrics: cosine = argmax cos(F, t_c)
    (the paper's); relevancy = argmax of the per-view min-max relevancy. Both are always scored."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""


def stage_presets(name: str) -> tuple[stage1.ReconstructConfig, stage2.SegmentConfig]:
    """The stage-1 and stage-2 configs of a pipeline preset (``default`` = our settings for a GPU)."""
    reconstruct = stage1.PRESETS.get(name) or stage1.PRESETS.get("paper")
    segment = stage2.PRESETS.get(name) or stage2.PRESETS.get("paper")
    return reconstruct, segment


@dataclass
class StageResult:
    """One row of the summary table."""

    stage: str
    status: str
    seconds: float
    metric: str
    path: str


def read_record(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAGE_RECORD).read_text())
    except (OSError, ValueError):
        return None


def record_digest(folder: Path) -> str:
    """A digest of a completed stage's record (config, time, result). It changes whenever that stage runs
    again, so a stage that reads another's outputs puts it in its own config and reruns after it."""
    return hashlib.sha1(json.dumps(read_record(folder), sort_keys=True).encode()).hexdigest()[:12]


def move_aside(folder: Path) -> Path:
    """Rename a stale stage folder to ``<name>.old-<n>`` (nothing is deleted)."""
    n = 1
    while folder.with_name(f"{folder.name}.old-{n}").exists():
        n += 1
    target = folder.with_name(f"{folder.name}.old-{n}")
    folder.rename(target)
    return target


def run_stage(name: str, folder: Path, config: dict, work: Callable[[bool], dict], metric: Callable[[dict], str],
              log: Callable[[str], None], after: tuple[Path, ...] = ()) -> StageResult:
    """Run ``work(resume)`` unless ``folder`` already holds a complete record of the same ``config``.

    ``after``: the folders of the stages whose outputs this one reads; their record digests join the
    config, so this stage reruns whenever one of them ran again. ``work`` returns the stage's result
    dict, stored in ``stage.json`` with the config and the time.
    """
    if after:
        config = {**config, "after": [record_digest(f) for f in after]}
    record = read_record(folder)
    if record is not None and record.get("config") == config:
        log(f"[{name}] complete with the same settings: skipped ({folder})")
        return StageResult(name, "skipped", record["seconds"], metric(record["result"]), str(folder))
    resume = False
    if record is not None:
        log(f"[{name}] settings changed: previous outputs moved to {move_aside(folder)}")
    elif folder.exists() and any(folder.iterdir()):
        resume = True
        log(f"[{name}] interrupted earlier: resuming in {folder}")
    else:
        log(f"[{name}] running -> {folder}")
    start = time.perf_counter()
    result = work(resume)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / STAGE_RECORD, {"config": config, "seconds": seconds, "result": to_plain(result)})
    return StageResult(name, "ran" if not resume else "resumed", seconds, metric(to_plain(result)), str(folder))


def reconstruct_metric(result: dict) -> str:
    return f"PSNR {result['psnr']:.2f} dB ({result['split']})" if "psnr" in result else "-"


def segment_metric(result: dict) -> str:
    return f"{result.get('iteration', '?')} iterations"


def test_metric(result: dict) -> str:
    if not result.get("metrics_computed"):
        return "no ground truth: rendered only"
    ours = result["3dovs"]
    text = f"mIoU {ours['miou']:.3f}, acc {ours['accuracy']:.3f} ({result.get('label_rule', 'cosine')} labels"
    reference = result.get("reference", {})
    text += "".join(f"; {rule} labels {reference[label_rule_key(rule)]['3dovs']['miou']:.3f}"
                    for rule in LABEL_RULES if label_rule_key(rule) in reference) + ")"
    teachers = [f"{reference[name]['3dovs']['miou']:.3f} {label}"
                for name, label in (("teacher_2d", "cosine"), ("teacher_2d_relevancy", "relevancy")) if name in reference]
    if teachers:
        text += f" (2D teacher mIoU {' / '.join(teachers)})"
    return text


def run_pipeline(scene: str | Path, out: str | Path, config: PipelineConfig, classes: list[str] | None = None,
                 log: Callable[[str], None] = print,
                 stage_configs: tuple[stage1.ReconstructConfig, stage2.SegmentConfig] | None = None
                 ) -> list[StageResult]:
    """Extract, reconstruct, segment and test ``scene`` into ``out``; returns the summary rows (also in
    ``out/summary.json``). Input is validated (scene, classes) before any stage starts.

    ``stage_configs`` replaces the preset's stage-1 and stage-2 configs (the demo scales them to its scene)."""
    from ovs3d.features.extract import extract_features
    from ovs3d.scene.load import load_scene

    scene, out = Path(scene), Path(out)
    reconstruct_config, segment_config = stage_configs or stage_presets(config.preset)
    reconstruct_config = dataclasses.replace(reconstruct_config, device=config.device)
    extract_config = dataclasses.replace(config.extract, device=config.device)
    loaded = load_scene(scene, downsample=reconstruct_config.downsample, load_annotations=True)
    classes = list(classes or loaded.classes)
    if not classes:
        raise InputError(scene / "segmentations" / "classes.txt", "no class list",
                         "write one class prompt per line there, or pass --classes-file")
    rows: list[StageResult] = []

    def extract(_resume: bool) -> dict:
        folders = extract_features(scene, extract_config, log=log)
        return {"clip": str(folders["clip"]), "dino": str(folders["dino"]) if folders["dino"] else None}

    rows.append(run_stage("extract", out / "features", to_plain(extract_config), extract,
                          lambda r: f"cache {Path(r['clip']).name}", log))
    stage1_dir = out / "reconstruct"
    rows.append(run_stage(
        "reconstruct", stage1_dir, {"scene": str(scene.resolve()), **to_plain(reconstruct_config)},
        lambda resume: stage1.reconstruct(scene, stage1_dir, reconstruct_config, resume=resume),
        reconstruct_metric, log))
    stage2_dir = out / "segment"
    rows.append(run_stage(
        "segment", stage2_dir, {"classes": classes, "stage1": str(stage1_dir.resolve()), **to_plain(segment_config),
                                "extract": to_plain(extract_config)},
        lambda resume: stage2.segment(stage1_dir, stage2_dir, segment_config, extract_config, scene_root=scene,
                                      classes=classes, resume=resume, device=config.device),
        segment_metric, log, after=(out / "features", stage1_dir)))
    test_dir = out / "test"

    def test(_resume: bool) -> dict:
        from ovs3d.eval.segment_eval import run_test

        if test_dir.exists():
            shutil.rmtree(test_dir / "segmentations_path", ignore_errors=True)
        return run_test(stage2_dir, test_dir, scene, config.video_frames, device=config.device,
                        labels=config.labels, video_downsample=config.video_downsample).metrics

    rows.append(run_stage("test", test_dir, {"segment": str(stage2_dir.resolve()), "video_frames": config.video_frames,
                                             "video_downsample": config.video_downsample, "labels": config.labels},
                          test, test_metric, log, after=(stage2_dir,)))
    write_json_atomic(out / "summary.json", [dataclasses.asdict(r) for r in rows])
    return rows


def summary_table(rows: list[StageResult]) -> str:
    """The end-of-run table: stage, status, seconds, key metric, output path."""
    header = ("stage", "status", "time", "result", "output")
    body = [(r.stage, r.status, f"{r.seconds:.1f} s", r.metric, r.path) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])
