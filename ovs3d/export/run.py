"""``export_run``: a stage-2 run's labelled point cloud, per-class meshes and text-selected objects, in the
frame of the input poses (``frames.py``), written under ``out`` (default ``<run>/export``):

    points.ply, classes.json        the labelled surface points (``points.py``, ``files.py``)
    mesh/<k>_<class>.ply, mesh/scene.glb   one mesh per class and a GLB with a node per class (``mesh.py``)
    object/<text>/points.ply, mesh.ply, object.json   what each ``--text`` selects (``select.py``)
    cameras.json, export.json       the input cameras; what was written (counts, sizes, seconds)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ovs3d.config import check_all, check_bounds
from ovs3d.errors import InputError
from ovs3d.eval.query import slug
from ovs3d.eval.segment_eval import scene_at_feature_resolution
from ovs3d.export import select
from ovs3d.export.files import class_comments, point_properties, write_glb, write_mesh_ply, write_point_ply
from ovs3d.export.frames import WorldFrame, cameras_json
from ovs3d.export.mesh import MeshConfig, iso_mesh, node_volume
from ovs3d.export.points import PointConfig, surface_points
from ovs3d.features.relevancy import text_embeddings
from ovs3d.field.shading import MlpPrecision, resolve_precision
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.colormaps import class_colors
from ovs3d.io.lock import folder_lock
from ovs3d.render.labels import LABEL_RULES
from ovs3d.runs.load import load_run, run_text_encoder

What = Literal["pointcloud", "mesh", "object", "all"]
WHATS = ("pointcloud", "mesh", "object", "all")


@dataclass
class ExportConfig:
    """Settings of ``ovs3d export``."""

    labels: Literal["cosine", "relevancy"] = "cosine"
    """Label rule: cosine = argmax cos(F, t_c) (the paper's, as ``ovs3d test``); relevancy = argmax of the
    cosines min-max normalised per class over the exported points. score_<k> holds the rule's scores."""
    threshold: float = 0.5
    """Object: a text selects the points (and grid nodes) whose relevancy, its cosine min-max normalised
    over the exported points, is at least this."""
    against_classes: bool = False
    """Object: also require the text to outscore every class prompt (it joins the class list)."""
    precision: MlpPrecision = "auto"
    """Matrix products of the feature head and the shading MLP (``field/shading.py``): auto = bf16 (fp32
    accumulation) where the CPU has native bf16, as stage 1 trains and the viewer renders; fp32 = exactly
    the products of ``ovs3d test``."""
    points: PointConfig = field(default_factory=PointConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)

    def check(self) -> None:
        """InputError naming the flag of the first field out of range (the nested configs check their own)."""
        if self.labels not in LABEL_RULES:
            raise InputError(None, f"unknown label rule {self.labels!r}", f"choose --export.labels from {list(LABEL_RULES)}")
        check_bounds(self, "export", at_least={"threshold": 0}, at_most={"threshold": 1})


def file_entry(path: Path, out: Path, **counts) -> dict:
    return {"file": str(path.relative_to(out)), "bytes": path.stat().st_size, **counts}


def export_run(run_dir: str | Path, what: What, out: str | Path | None = None, texts: list[str] = (),
               scene_root: str | Path | None = None, config: ExportConfig | None = None,
               device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """Write the exports ``what`` asks for (module docstring); returns (and writes as export.json) the summary."""
    config = config or ExportConfig()
    check_all(config)
    texts = [t.strip() for t in texts]
    if what not in WHATS:
        raise InputError(None, f"unknown export {what!r}", f"choose one of {list(WHATS)}")
    if what == "object" and (not texts or not all(texts)):
        raise InputError(None, "`ovs3d export object` needs a query text", 'pass --text "a red chair" (repeat for more)')
    start = time.perf_counter()
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "export"
    model, record = load_run(run_dir, device, stage="segment")
    precision = resolve_precision(config.precision, torch.device(device))
    model.set_precision(precision)
    with folder_lock(out, "ovs3d export"):
        scene = scene_at_feature_resolution(record, scene_root, annotations=False)
        frame = WorldFrame.of(model.field.space, scene)
        classes = list(record.classes)
        text = model.class_text.float().cpu()
        if texts:
            encoder = run_text_encoder(record, device)
            text = torch.cat([text, text_embeddings(encoder, texts).float().cpu()])
        n_classes = len(classes)
        summary = {"run": str(run_dir.resolve()), "scene": str(scene.root.resolve()), "what": what, "classes": classes,
                   "label_rule": config.labels, "precision": precision,
                   "encoders": record.encoders, "builtin_encoders": record.builtin_encoders,
                   "frame": "the input poses' frame (NDC warp and scene normalisation undone)", "files": [],
                   "seconds": {}}
        write_json_atomic(out / "cameras.json", cameras_json(scene))
        summary["files"].append(file_entry(out / "cameras.json", out, cameras=scene.n_images))
        tick = time.perf_counter()
        points = surface_points(model, scene, record.step, text, frame, config.points, progress, n_classes, config.labels)
        summary["seconds"]["points"] = time.perf_counter() - tick
        summary["halo_rays_dropped"] = points.halo
        lohi = select.ranges(points.cosines)
        class_scores = select.scores(points.cosines[:, :n_classes], config.labels, lohi[:, :n_classes])
        labels = class_scores.argmax(1) if len(points) else np.zeros(0, np.int64)
        comments = [f"ovs3d export of {run_dir.name}: frame of the input poses; label rule {config.labels}",
                    *class_comments(classes)]
        if record.builtin_encoders:
            comments.insert(1, "built-in weight-free encoders (NOT CLIP or DINO)")
        if what in ("pointcloud", "all"):
            path = write_point_ply(out / "points.ply", points.xyz, points.rgb, point_properties(labels, class_scores),
                                   comments)
            per_class = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
            summary["files"].append(file_entry(path, out, points=len(points), per_class=per_class))
        write_json_atomic(out / "classes.json", {
            "classes": classes, "label": "vertex property `label` = index into classes",
            "scores": f"score_<k>: the {config.labels} score of class k (label = argmax_k score_k)",
            "label_rule": config.labels, "colors": class_colors(n_classes).tolist(), "encoders": record.encoders,
            "builtin_encoders": record.builtin_encoders, "voxel": points.voxel})
        summary["files"].append(file_entry(out / "classes.json", out))
        if what in ("mesh", "object", "all"):
            tick = time.perf_counter()
            level = config.mesh.level
            volume = node_volume(model, record.step, text, level, config.mesh, progress)
            if what in ("mesh", "all"):
                node_scores = select.scores(volume.cosines[:, :n_classes], config.labels, lohi[:, :n_classes])
                node_labels = node_scores.argmax(1)
                meshes = [iso_mesh(name, volume, node_labels == k, level, model, frame) for k, name in enumerate(classes)]
                for k, mesh in enumerate(meshes):
                    path = write_mesh_ply(out / "mesh" / f"{k:02d}_{slug(mesh.name)}.ply", mesh,
                                          comments[:1] + [f"class {k} {mesh.name}"])
                    summary["files"].append(file_entry(path, out, vertices=len(mesh.vertices), faces=len(mesh.faces)))
                path = write_glb(out / "mesh" / "scene.glb", meshes)
                summary["files"].append(file_entry(path, out, nodes=[m.name for m in meshes if len(m.faces)]))
            for q, prompt in enumerate(texts if what in ("object", "all") else []):
                col = n_classes + q
                keep = select.selected(points.cosines[:, col], points.cosines[:, :n_classes], config.labels,
                                       config.threshold, config.against_classes, lohi[:, list(range(n_classes)) + [col]])
                folder = out / "object" / slug(prompt)
                relevancy = select.normalized(points.cosines[keep, col:col + 1], lohi[:, col:col + 1])[:, 0]
                path = write_point_ply(folder / "points.ply", points.xyz[keep], points.rgb[keep],
                                       {"relevancy": relevancy.astype(np.float32)}, [comments[0], f"text {prompt}"])
                summary["files"].append(file_entry(path, out, points=int(keep.sum())))
                members = select.selected(volume.cosines[:, col], volume.cosines[:, :n_classes], config.labels,
                                          config.threshold, config.against_classes,
                                          lohi[:, list(range(n_classes)) + [col]])
                mesh = iso_mesh(prompt, volume, members, level, model, frame)
                path = write_mesh_ply(folder / "mesh.ply", mesh, [comments[0], f"text {prompt}"])
                summary["files"].append(file_entry(path, out, vertices=len(mesh.vertices), faces=len(mesh.faces)))
                write_json_atomic(folder / "object.json", {"text": prompt, "threshold": config.threshold,
                                                           "against_classes": config.against_classes,
                                                           "points": int(keep.sum()), "of_points": len(points),
                                                           "mesh_faces": len(mesh.faces)})
            summary["seconds"]["meshes"] = time.perf_counter() - tick
        summary["seconds"]["total"] = time.perf_counter() - start
        summary["points"] = len(points)
        write_json_atomic(out / "export.json", summary)
    summary["out"] = str(out)
    return summary
