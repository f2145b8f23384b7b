"""The whole pipeline in one folder: extract -> reconstruct -> segment -> test (``ovs3d run``), and the
stage-2 orchestration every verb shares (``segment_stage``: extraction, text, teacher, training).

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
from typing import Callable

import torch

from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.eval.segment_eval import TestConfig, custom_ground_truth, ground_truth, label_rule_key, run_test
from ovs3d.features.extract import ExtractConfig, extract_clip, extract_dino, extract_features
from ovs3d.features.hub import check_weights_file
from ovs3d.features.registry import build_image_text_encoder
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.lock import folder_lock
from ovs3d.preflight import RUN_BYTES, classes_match_masks, embed_prompts, feature_cache_bytes, writable_folder
from ovs3d.render.labels import LABEL_RULES
from ovs3d.runs.store import read_run
from ovs3d.scene.annotations import read_classes
from ovs3d.scene.load import load_scene
from ovs3d.train.configs import PresetName, ReconstructConfig, SegmentConfig, preset
from ovs3d.train.reconstruct import reconstruct
from ovs3d.train.segment import segment
from ovs3d.train.segment_data import prepare_data

STAGE_RECORD = "stage.json"


@dataclass
class PipelineConfig:
    """Settings of ``ovs3d run``: the preset of every stage, then any stage field (``--reconstruct.*``,
    ``--segment.*``) over it, the encoders (``--extract.*``) and the test stage (``--test.*``)."""

    preset: PresetName = "cpu"
    """Preset of every stage: test (seconds), cpu (minutes on 2 cores), default (our settings, GPU), paper."""
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    """Feature extraction (encoders: --extract.clip.kind, --extract.clip.weights, --extract.dino.*)."""
    reconstruct: ReconstructConfig = field(default_factory=lambda: preset("reconstruct", "cpu"))
    """Stage 1 (the preset's values; every field can be set)."""
    segment: SegmentConfig = field(default_factory=lambda: preset("segment", "cpu"))
    """Stage 2 (the preset's values; every field can be set)."""
    test: TestConfig = field(default_factory=TestConfig)
    """The test stage (video, label rule)."""

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "PipelineConfig":
        """The pipeline config whose stage configs are preset ``name``'s."""
        return cls(preset=name, reconstruct=preset("reconstruct", name), segment=preset("segment", name), **overrides)


def scene_classes(scene_root: Path, classes: list[str] | None) -> list[str]:
    """``classes``, else the scene's ``segmentations/classes.txt``; InputError when there are none."""
    class_file = scene_root / "segmentations" / "classes.txt"
    found = list(classes or (read_classes(class_file) if class_file.is_file() else []))
    if not found:
        raise InputError(class_file, "no class list",
                         "write one class prompt per line in segmentations/classes.txt, or pass --classes-file")
    return found


def segment_stage(stage1: str | Path, out: str | Path, config: SegmentConfig, extract: ExtractConfig,
                  scene_root: str | Path | None = None, classes: list[str] | None = None, resume: bool = False,
                  device: torch.device | str = "cpu", progress: bool = True, dino_folder: Path | None = None) -> dict:
    """Stage 2 of a scene with its extracted features as the teacher: extract the CLIP (and, when FDA is
    on, DINO) caches when missing, embed the class prompts, train (``train.segment.segment``). The scene
    defaults to the one stage 1 was trained on, the classes to its ``segmentations/classes.txt``;
    ``dino_folder``, a DINO-format map cache to use instead of extracting one (a benchmark's affinities)."""
    device = torch.device(device)
    stage1_record, _ = read_run(stage1, "cpu", stage="reconstruct")
    scene_root = Path(scene_root or stage1_record.scene).resolve()
    scene = load_scene(scene_root, load_annotations=False)
    classes = scene_classes(scene_root, classes)
    use_dino = config.uses_dino
    encoder = build_image_text_encoder(extract.clip, device)
    text = embed_prompts(encoder, classes)
    writable_folder(out, RUN_BYTES)
    clip_folder = extract_clip(scene_root, extract, encoder=encoder, device=device)
    if use_dino:
        dino_folder = dino_folder or extract_dino(scene_root, extract, device=device)
    else:
        dino_folder = None
    data = prepare_data(scene, clip_folder, dino_folder, text)
    h, w = data.clip_hw
    inputs = {"scene": str(scene_root), "classes": classes, "width": w, "height": h,
              "encoders": {"clip": data.clip.encoder, "dino": data.dino.encoder if data.dino else "unused"},
              "builtin_encoders": extract.clip.kind == "builtin" or (use_dino and extract.dino.kind == "builtin"),
              "inputs": {"clip_cache": str(Path(clip_folder).resolve()),
                         "dino_cache": str(Path(dino_folder).resolve()) if dino_folder else None,
                         "clip_resolution": [w, h], "clip_config": to_plain(extract.clip)}}
    return segment(stage1, out, config, data, inputs, resume=resume, device=device, progress=progress)


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
    if result.get("mode") == "instant":
        return f"instant lifting ({result['lift']['nodes']} nodes, {result['lift']['seconds']:.1f} s)"
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
                 log: Callable[[str], None] = print, device: torch.device | str = "cpu") -> list[StageResult]:
    """Extract, reconstruct, segment and test ``scene`` into ``out``; returns the summary rows (also in
    ``out/summary.json``). Input is validated (scene, classes) before any stage starts."""
    scene, out = Path(scene).resolve(), Path(out)
    loaded = load_scene(scene, downsample=config.reconstruct.downsample,
                        load_annotations=not custom_ground_truth(config.test))
    loaded.annotations = ground_truth(loaded, config.test)     # the ground truth the test stage will read
    classes = list(classes or (loaded.annotations.classes if loaded.annotations else []))
    if not classes:
        raise InputError(scene / "segmentations" / "classes.txt", "no class list",
                         "write one class prompt per line there, or pass --classes-file")
    classes_match_masks(loaded, classes)
    embed_prompts(build_image_text_encoder(config.extract.clip, torch.device(device)), classes)
    if not config.extract.skip_dino:
        check_weights_file(config.extract.dino.weights, "--extract.dino.weights")
    writable_folder(out, 4 * RUN_BYTES)
    features = scene / "features"
    writable_folder(features, 0 if features.is_dir() else feature_cache_bytes(scene, config.extract),
                    what="the scene's features/ folder")
    with folder_lock(out, "ovs3d run", log=log):
        rows = run_stages(scene, out, config, classes, log, device)
    write_json_atomic(out / "summary.json", [dataclasses.asdict(r) for r in rows])
    return rows


def run_stages(scene: Path, out: Path, config: PipelineConfig, classes: list[str], log: Callable[[str], None],
               device: torch.device | str) -> list[StageResult]:
    """The four stages of ``run_pipeline``, in order, each skipped when complete with the same settings."""
    rows: list[StageResult] = []

    def extract(_resume: bool) -> dict:
        folders = extract_features(scene, config.extract, log=log, device=device)
        return {"clip": str(folders["clip"]), "dino": str(folders["dino"]) if folders["dino"] else None}

    rows.append(run_stage("extract", out / "features", to_plain(config.extract), extract,
                          lambda r: f"cache {Path(r['clip']).name}", log))
    stage1_dir = out / "reconstruct"
    rows.append(run_stage(
        "reconstruct", stage1_dir, {"scene": str(scene), **to_plain(config.reconstruct)},
        lambda resume: reconstruct(scene, stage1_dir, config.reconstruct, resume=resume, device=device, log=log),
        reconstruct_metric, log))
    stage2_dir = out / "segment"
    rows.append(run_stage(
        "segment", stage2_dir, {"classes": classes, "stage1": str(stage1_dir.resolve()), **to_plain(config.segment),
                                "extract": to_plain(config.extract)},
        lambda resume: segment_stage(stage1_dir, stage2_dir, config.segment, config.extract, scene_root=scene,
                                     classes=classes, resume=resume, device=device),
        segment_metric, log, after=(out / "features", stage1_dir)))
    test_dir = out / "test"

    def test(_resume: bool) -> dict:
        if test_dir.exists():
            shutil.rmtree(test_dir / "segmentations_path", ignore_errors=True)
        return run_test(stage2_dir, test_dir, scene, config.test, device=device).metrics

    rows.append(run_stage("test", test_dir, {"segment": str(stage2_dir.resolve()), **to_plain(config.test)},
                          test, test_metric, log, after=(stage2_dir,)))
    return rows


def summary_table(rows: list[StageResult]) -> str:
    """The end-of-run table: stage, status, seconds, key metric, output path."""
    header = ("stage", "status", "time", "result", "output")
    body = [(r.stage, r.status, f"{r.seconds:.1f} s", r.metric, r.path) for r in rows]
    widths = [max(len(str(x[i])) for x in [header, *body]) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])
