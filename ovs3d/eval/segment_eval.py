"""``ovs3d test``: render a stage-2 run's segmentation and score it (method spec section 7).

Per pixel at the test resolution: render F with the camera renderer (midpoint samples, no jitter,
stage 1's marching step), normalise it and take r_c = cos(F, t_hat_c) for every class. Two label
rules (``render/labels.py``; no threshold, no "unknown" class):

* ``cosine`` (the paper's, default): argmax_c r_c;
* ``relevancy``: argmax_c of r_c min-max normalised per class over the view's pixels, the same
  normalisation as the teacher's relevancies R (spec 4) and the per-query protocol. It removes each
  class's offset (some prompts are closer to everything), but a class absent from the view is still
  stretched to [0, 1] and claims its most similar pixels.

The chosen rule draws the overlays and the video and fills ``3dovs``; the other rule is scored too
(``reference/ours_3d_<rule>_labels``). Written under the output folder (default ``<run>/test``):

    segmentations_test/<view:03d>.png   overlays (0.65 class colour + 0.35 RGB, black boundaries) of
                                        the annotated views (all views when the scene has no masks)
    segmentations_path/NNN.png, video.mp4  the spiral, overlaid on the rendered RGB
    classes_color.png                   legend
    results.txt, metrics.json           the 3D-OVS protocol and both per-query variants (min-max,
                                        ``per_query``; LERF relevancy against the canonical negatives,
                                        ``per_query_lerf``; ``eval/segmentation.py``), plus the 2D
                                        teacher's own per-view argmax on the same views

The ground truth is the scene's ``segmentations/`` unless ``--test.annotations`` names another folder of the
same layout (e.g. corrected labels); ``--test.view-images`` maps annotation folders that are not named by their
image's index to the image (``scene/annotations.py``). The negatives are embedded with the run's own text
encoder; without it (weights gone) ``per_query_lerf`` is left out and the report says why.

Two 2D teachers are scored on the same views, from the cached CLIP hierarchy at the test resolution
(what the features say before any 3D lifting): ``teacher_2d``, argmax_c mean_s cos(f_hat_s, t_hat_c)
(the cosines the feature loss distils), and ``teacher_2d_relevancy``, argmax_c mean_s R_{s,c} with the
per-image min-max relevancies R of the RDA target and ``ovs3d relevancy``
(as ``features.relevancy.label_map``); the second is usually the stronger.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as nnf

from ovs3d.config import check_bounds
from ovs3d.errors import InputError, WeightsUnavailableError
from ovs3d.eval.report import write_report
from ovs3d.eval.segmentation import ProtocolResult, evaluate_3dovs, evaluate_per_query, evaluate_per_query_lerf
from ovs3d.features.cache import FeatureMaps
from ovs3d.features.relevancy import (CANONICAL_NEGATIVES, NEGATIVE_TEMPERATURE, apply_ranges, cosine_maps,
                                      minmax_ranges, negative_embeddings, pairwise_relevancy)
from ovs3d.io.colormaps import legend, overlay
from ovs3d.io.images import image_size, list_images, write_png
from ovs3d.io.lock import folder_lock
from ovs3d.io.video import write_video
from ovs3d.render.camera import radiance_field, render_camera
from ovs3d.render.labels import LABEL_RULES, label_pixels
from ovs3d.runs.load import load_run, run_text_encoder
from ovs3d.runs.record import RunRecord
from ovs3d.scene.annotations import CLASSES, Annotations, image_indices, load_annotations
from ovs3d.scene.load import load_scene
from ovs3d.scene.scene import Scene
from ovs3d.scene.paths import video_path

LabelRule = Literal["cosine", "relevancy"]
GROUND_TRUTH = Path("segmentations")


@dataclass
class TestConfig:
    """Settings of the test stage (``ovs3d test``, and the test stage of ``ovs3d run``)."""

    video_frames: int = 120
    """Frames of the spiral segmentation video (0: no video)."""
    video_downsample: float = 1.0
    """The video is rendered at the test resolution divided by this."""
    labels: LabelRule = "cosine"
    """Label rule of the overlays, the video and the main metrics: cosine = argmax cos(F, t_c) (the
    paper's); relevancy = argmax of cos(F, t_c) min-max normalised per class over the view. Both are
    scored either way."""
    chunk: int = 8192
    """Rays per rendering chunk."""
    annotations: Path = GROUND_TRUTH
    """Ground-truth folder, relative to the scene (or absolute): classes.txt and one folder of masks per annotated
    view, as segmentations/ (e.g. segmentations_corrected for corrected labels)."""
    view_images: dict[str, str] = field(default_factory=dict)
    """Annotation folders not named by their image's index: folder name -> image file name without extension
    (3D-OVS table: 30 IMG_20230412_214716)."""

    def check(self) -> None:
        """InputError naming the flag of the first field out of range."""
        check_bounds(self, "test", at_least={"video_frames": 0, "chunk": 1}, above={"video_downsample": 0})


def label_rule_key(rule: str) -> str:
    """metrics.json ``reference`` key of our 3D result under the label rule that was not chosen."""
    return f"ours_3d_{rule}_labels"


def teacher_labels(clip_maps, image: int, text: torch.Tensor, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """The 2D teacher's labels [H, W] of cached image ``image`` at ``size`` = (H, W) under both rules, from
    one read of its hierarchy (unit features [S, D, h, w], cosines r [S, C, h, w]): ``cosine`` = argmax_c
    mean_s r_{s,c}, ``relevancy`` = argmax_c mean_s R_{s,c} with R min-max per (scale, class) over the
    image; the mean scores are bilinearly resized before the argmax."""
    cos = cosine_maps(clip_maps.dense(image), text.float().cpu())
    scores = {"cosine": cos.mean(0), "relevancy": apply_ranges(cos, minmax_ranges(cos)).mean(0)}
    return {rule: nnf.interpolate(score[None], size=size, mode="bilinear", align_corners=False)[0].argmax(0).numpy()
            for rule, score in scores.items()}


def scene_at_feature_resolution(record: RunRecord, scene_root: str | Path | None = None, annotations: bool = True):
    """The run's scene (or ``scene_root``) loaded at the CLIP feature resolution the run was trained at."""
    root = Path(scene_root or record.scene)
    stored_w, _ = image_size(list_images(root / "images")[0])
    return load_scene(root, downsample=stored_w / record.width, load_annotations=annotations)


def custom_ground_truth(config: TestConfig) -> bool:
    """Whether the test reads its ground truth otherwise than the scene loader does (another folder, a mapping)."""
    return config.annotations != GROUND_TRUTH or bool(config.view_images)


def ground_truth(scene: Scene, config: TestConfig) -> Annotations | None:
    """The ground truth the test stage scores, at the scene's working size: the loader's own (the scene loaded with
    its annotations) unless ``custom_ground_truth``: then ``config.annotations`` with ``config.view_images``, whose
    folder must have a class list."""
    if not custom_ground_truth(config):
        return scene.annotations
    seg_dir = scene.root / config.annotations
    index = image_indices(seg_dir, config.view_images, scene.image_paths)
    ann = load_annotations(scene.root, scene.n_images, (scene.width, scene.height), image_size(scene.image_paths[0]),
                           config.annotations, index)
    if ann is None:
        raise InputError(seg_dir / CLASSES, "the ground-truth folder given to the test has no class list",
                         "pass a folder laid out as segmentations/ (classes.txt and one folder per view)")
    return ann


def lerf_negatives(record: RunRecord, device: torch.device | str) -> tuple[torch.Tensor | None, str | None]:
    """([N, D] unit embeddings of the canonical negatives from the run's own text encoder, a note or None);
    (None, why) when that encoder cannot be built."""
    if record.inputs.get("clip_config") is None:
        return None, "per_query_lerf not computed: the run does not record its text encoder"
    try:
        encoder = run_text_encoder(record, device)
    except WeightsUnavailableError as exc:
        return None, f"per_query_lerf not computed: the run's text encoder is unavailable ({exc})"
    return negative_embeddings(encoder)


@dataclass
class TestOutputs:
    """What ``run_test`` produced: the output folder, the metrics dict and the file lists."""

    out: Path
    metrics: dict
    overlays: list[Path]
    video: Path | None


def run_test(run_dir: str | Path, out: str | Path | None = None, scene_root: str | Path | None = None,
             config: TestConfig | None = None, device: torch.device | str = "cpu") -> TestOutputs:
    """Render and score a stage-2 run (see the module docstring); ``config.labels`` is the label rule of
    the overlays, the video and the ``3dovs`` entry. Returns the outputs' summary."""
    config = config or TestConfig()
    config.check()
    labels = config.labels
    if labels not in LABEL_RULES:
        raise InputError(None, f"unknown label rule {labels!r}", f"choose --test.labels from {list(LABEL_RULES)}")
    run_dir = Path(run_dir)
    model, record = load_run(run_dir, device, stage="segment")
    text = model.class_text
    out = Path(out) if out is not None else run_dir / "test"
    with folder_lock(out, "ovs3d test"), radiance_field(model).frozen():
        scene = scene_at_feature_resolution(record, scene_root, annotations=not custom_ground_truth(config))
        root = scene.root
        classes = record.classes
        ann = ground_truth(scene, config)
        if ann is not None and ann.classes != classes:
            raise InputError(root / config.annotations / CLASSES, f"the annotated classes {ann.classes} differ from "
                             f"the classes the run was trained with {classes}",
                             "train with the scene's class list, or pass a scene whose masks match the run's classes")
        other = next(rule for rule in LABEL_RULES if rule != labels)
        views = ann.views if ann is not None else list(range(scene.n_images))
        cameras = scene.cameras.to(device)
        negatives, negatives_note = lerf_negatives(record, device) if ann is not None else (None, None)
        queries = text if negatives is None else torch.cat([text, negatives.to(text)])
        label_maps, other_maps, cosines, lerf, overlays = [], [], [], [], []
        for view in views:
            rendered = render_camera(model, cameras, view, record.step, ("cosines",), config.chunk, queries)
            cos, neg = rendered["cosines"].cpu().split([len(classes), len(queries) - len(classes)])
            if negatives is not None:
                lerf.append(pairwise_relevancy(cos, neg).numpy())
            label = label_pixels(cos, labels).numpy()
            label_maps.append(label)
            other_maps.append(label_pixels(cos, other).numpy())
            cosines.append(cos.numpy())
            path = out / "segmentations_test" / f"{view:03d}.png"
            write_png(path, overlay(label, scene.images[view], len(classes)))
            overlays.append(path)
        write_png(out / "classes_color.png", legend(classes))
        protocols: list[ProtocolResult] = []
        reference: dict[str, ProtocolResult] = {}
        if ann is not None:
            protocols = [evaluate_3dovs(np.stack(label_maps), ann.labels, views, classes),
                         evaluate_per_query(np.stack(cosines), ann.labels, views, classes)]
            if negatives is not None:
                protocols.append(evaluate_per_query_lerf(np.stack(lerf), ann.labels, views, classes))
            reference[label_rule_key(other)] = evaluate_3dovs(np.stack(other_maps), ann.labels, views, classes)
            clip_cache = record.inputs.get("clip_cache")
            if clip_cache and Path(clip_cache).is_dir():
                maps = FeatureMaps(clip_cache)
                teacher = [teacher_labels(maps, v, text, (scene.height, scene.width)) for v in views]
                for rule, name in (("cosine", "teacher_2d"), ("relevancy", "teacher_2d_relevancy")):
                    reference[name] = evaluate_3dovs(np.stack([t[rule] for t in teacher]), ann.labels, views, classes)
        video = None
        if config.video_frames > 0:
            path_cams = video_path(scene.cameras, scene.bounds, scene.kind, config.video_frames)
            path_cams = path_cams.downsampled(config.video_downsample).to(device)
            frames = []
            for i in range(len(path_cams)):
                rendered = render_camera(model, path_cams, i, record.step, ("rgb", "labels"), config.chunk, text, labels)
                frame = overlay(rendered["labels"].cpu().numpy(), rendered["rgb"].cpu().numpy(), len(classes))
                write_png(out / "segmentations_path" / f"{i:03d}.png", frame)
                frames.append(frame)
            write_png(out / "segmentations_path" / "classes_color.png", legend(classes))
            video = write_video(out / "segmentations_path" / "video.mp4", frames, fps=30)
        extra = {"run": str(run_dir.resolve()), "scene": str(Path(root).resolve()), "resolution": [scene.width, scene.height],
                 "views": views, "semantic_mode": record.semantic["mode"], "iteration": record.iteration,
                 "label_rule": labels, "ground_truth": str(config.annotations), "view_images": dict(config.view_images),
                 "lerf_negatives": {"words": list(CANONICAL_NEGATIVES), "temperature": NEGATIVE_TEMPERATURE,
                                    "computed": negatives is not None, "note": negatives_note}}
        rule = {"cosine": "argmax of cos(F, t_c), the paper's rule",
                "relevancy": "argmax of cos(F, t_c) min-max normalised per class over the view"}[labels]
        metrics = write_report(out, classes, record.encoders, record.builtin_encoders, protocols, extra,
                               reference, notes=[f"labels: {labels} ({rule}); [{label_rule_key(other)}] below scores the "
                                                 f"other rule"] + ([f"note: {negatives_note}"] if negatives_note else []))
        return TestOutputs(out, metrics, overlays, video)
