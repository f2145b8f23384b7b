"""nerfstudio / Blender ``transforms.json``: reader, writer and scene loader.

Format: ``frames`` is a list of ``{"file_path": ..., "transform_matrix": 4x4 camera-to-world}``, with
OpenGL camera axes (right, up, back), the same as ovs3d's, so poses need no axis change. Intrinsics
are shared (top level) or per frame (a frame's keys win): ``fl_x``, ``fl_y``, ``cx``, ``cy``, ``w``,
``h`` in pixels, or Blender's ``camera_angle_x`` (horizontal field of view in radians, so
fl_x = fl_y = w / (2 tan(camera_angle_x / 2)) and the principal point at the image centre).
``file_path`` is relative to the file's folder; Blender's extension-less paths get ``.png``.

Depth bounds are not part of the format. ovs3d writes each frame's ``near`` and ``far`` (extra keys
that other tools ignore) and reads them back. A file without them gets bounds from the camera layout:
with d_i the depth of the cameras' look-at centre along camera i's axis, near = d_i / 10 and
far = 10 d_i (a warning says so); when the cameras do not converge on a centre (some d_i <= 0) the
loader asks for the bounds. The views are the frames sorted by file path; the poses are normalised
like every other format (``scene/normalize.py``).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ovs3d.errors import InputError
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.images import image_size
from ovs3d.scene.assemble import assemble_scene, check_same_size
from ovs3d.scene.normalize import look_at_center
from ovs3d.scene.scene import Scene

TRANSFORMS = "transforms.json"
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
LAYOUT_NEAR_FACTOR, LAYOUT_FAR_FACTOR = 0.1, 10.0
PERSPECTIVE_MODELS = ("OPENCV", "PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "PERSPECTIVE")


@dataclass
class Transforms:
    """The content of a ``transforms.json``, frames sorted by file path.

    Attributes:
        paths: the N image files (absolute).
        c2w: [N, 3, 4] camera-to-world, OpenGL axes (right, up, back), the file's world frame.
        intrinsics: [N, 4] (fx, fy, cx, cy) in pixels at ``size``.
        size: (W, H) of every image.
        bounds: [N, 2] near/far depths, or None when the file has none.
    """

    paths: list[Path]
    c2w: np.ndarray
    intrinsics: np.ndarray
    size: tuple[int, int]
    bounds: np.ndarray | None


def frame_image_path(folder: Path, file_path: str) -> Path:
    """The image a frame names; Blender's paths without an extension get ``.png``."""
    path = Path(os.path.normpath(folder / file_path))
    if not path.suffix and path.with_suffix(".png").is_file():
        path = path.with_suffix(".png")
    return path


def frame_intrinsics(meta: dict, frame: dict, path: Path, source: Path) -> tuple[tuple[float, ...], tuple[int, int]]:
    """((fx, fy, cx, cy), (w, h)) of one frame: its own keys, else the file's shared ones."""
    def get(key):
        return frame.get(key, meta.get(key))

    w, h = get("w"), get("h")
    if w is None or h is None:
        if not path.is_file():
            raise InputError(path, f"the image named in {source.name} does not exist",
                             f"put the image there or remove its frame from {source.name}")
        w, h = image_size(path)
    w, h = int(w), int(h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and fy is None:
        angle = get("camera_angle_x")
        if angle is None:
            raise InputError(source, f"frame {frame.get('file_path')} has no focal length",
                             "give fl_x/fl_y (pixels) or camera_angle_x (radians), at the top level or per frame")
        fx = fy = 0.5 * w / math.tan(0.5 * float(angle))
    fx = float(fx if fx is not None else fy)
    fy = float(fy if fy is not None else fx)
    cx, cy = get("cx"), get("cy")
    return (fx, fy, float(w / 2 if cx is None else cx), float(h / 2 if cy is None else cy)), (w, h)


def parse_matrix(frame: dict, source: Path) -> np.ndarray:
    """[3, 4] camera-to-world of a frame (``transform_matrix`` 4x4 or 3x4), finite, rotation orthonormal."""
    try:
        matrix = np.asarray(frame["transform_matrix"], dtype=np.float64)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(source, f"frame {frame.get('file_path')} has no valid transform_matrix ({exc})",
                         "give each frame a 4x4 camera-to-world transform_matrix") from exc
    if matrix.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(matrix)):
        raise InputError(source, f"frame {frame.get('file_path')}: transform_matrix must be a finite 4x4 matrix",
                         "give each frame a 4x4 camera-to-world transform_matrix")
    rot = matrix[:3, :3]
    if not np.allclose(rot.T @ rot, np.eye(3), atol=1e-3):
        raise InputError(source, f"frame {frame.get('file_path')}: the rotation of transform_matrix is not "
                         "orthonormal (scaled or sheared)", "store rigid camera-to-world transforms")
    return matrix[:3]


def read_transforms(path: str | Path) -> Transforms:
    """Parse and validate a ``transforms.json`` (see the module docstring)."""
    path = Path(path)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(path, f"cannot read the JSON file ({exc})", "fix or regenerate transforms.json") from exc
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not frames:
        raise InputError(path, "no 'frames' list", "list the images under 'frames' with file_path and transform_matrix")
    model = str(meta.get("camera_model", "PINHOLE")).upper()
    if model not in PERSPECTIVE_MODELS:
        raise InputError(path, f"camera_model {model} is not a perspective camera",
                         "undistort the images to a pinhole camera first")
    if any(abs(float(f.get(k, meta.get(k, 0.0)))) > 1e-3 for f in frames for k in DISTORTION_KEYS):
        warnings.warn(f"{path}: lens distortion coefficients are ignored; undistort the images for exact rays",
                      stacklevel=2)
    folder = path.parent
    entries = []
    for frame in frames:
        if "file_path" not in frame:
            raise InputError(path, "a frame has no file_path", "give every frame the path of its image")
        image = frame_image_path(folder, str(frame["file_path"]))
        intr, size = frame_intrinsics(meta, frame, image, path)
        near, far = frame.get("near", meta.get("near")), frame.get("far", meta.get("far"))
        entries.append((image, parse_matrix(frame, path), intr, size,
                        None if near is None or far is None else (float(near), float(far))))
    entries.sort(key=lambda e: str(e[0]))
    sizes = {e[3] for e in entries}
    if len(sizes) != 1:
        raise InputError(path, f"the frames have several image sizes {sorted(sizes)}",
                         "give all images of a scene one size")
    bounds = None
    if all(e[4] is not None for e in entries):
        bounds = np.array([e[4] for e in entries], dtype=np.float64)
        if np.any(bounds <= 0) or np.any(bounds[:, 1] <= bounds[:, 0]):
            raise InputError(path, "near/far must be positive with near < far", "fix the frames' near and far")
    return Transforms(paths=[e[0] for e in entries], c2w=np.stack([e[1] for e in entries]),
                      intrinsics=np.array([e[2] for e in entries], dtype=np.float64), size=sizes.pop(), bounds=bounds)


def layout_bounds(c2w: np.ndarray, source: Path) -> np.ndarray:
    """[N, 2] near/far from the camera layout alone: (d_i / 10, 10 d_i), d_i the depth of the look-at
    centre along camera i's viewing axis."""
    depth = np.einsum("ni,ni->n", look_at_center(c2w) - c2w[:, :, 3], -c2w[:, :, 2])
    if len(c2w) < 2 or np.any(depth <= 0):
        raise InputError(source, "the frames carry no near/far depth bounds and the cameras do not converge on "
                         "a centre to estimate them", "add 'near' and 'far' (scene units) to each frame, or "
                         "compute poses with `ovs3d process-data`")
    warnings.warn(f"{source}: no near/far in the frames; using {LAYOUT_NEAR_FACTOR} and {LAYOUT_FAR_FACTOR} "
                  "times each camera's distance to the look-at centre", stacklevel=2)
    return np.stack([LAYOUT_NEAR_FACTOR * depth, LAYOUT_FAR_FACTOR * depth], axis=1)


def write_transforms(path: str | Path, image_paths: list[Path], c2w: np.ndarray, intrinsics: np.ndarray,
                     size: tuple[int, int], bounds: np.ndarray | None = None) -> None:
    """Write a ``transforms.json`` atomically (pinhole camera; shared intrinsics when all frames agree).

    Args:
        image_paths: the N images (absolute, or relative to the working directory); stored relative to
            the file's folder.
        c2w: [N, 3, 4] (or [N, 4, 4]) camera-to-world in OpenGL axes; intrinsics: [N, 4] (fx, fy, cx, cy)
        at ``size`` = (W, H); bounds: optional [N, 2] near/far, stored per frame.
    """
    path = Path(path)
    c2w = np.asarray(c2w, dtype=np.float64)[:, :3]
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    shared = bool(np.all(intrinsics == intrinsics[:1]))
    keys = ("fl_x", "fl_y", "cx", "cy")
    meta: dict = {"camera_model": "PINHOLE", "w": int(size[0]), "h": int(size[1])}
    if shared:
        meta.update({k: float(v) for k, v in zip(keys, intrinsics[0])})
    frames = []
    for i, image in enumerate(image_paths):
        matrix = np.concatenate([c2w[i], [[0.0, 0.0, 0.0, 1.0]]], axis=0)
        relative = Path(os.path.relpath(Path(image).resolve(), path.parent.resolve())).as_posix()
        frame: dict = {"file_path": relative, "transform_matrix": matrix.tolist()}
        if not shared:
            frame.update({k: float(v) for k, v in zip(keys, intrinsics[i])})
        if bounds is not None:
            frame["near"], frame["far"] = float(bounds[i, 0]), float(bounds[i, 1])
        frames.append(frame)
    meta["frames"] = frames
    write_json_atomic(path, meta)


def load_nerfstudio(root: str | Path, downsample: float = 1.0, holdout_every: int = 0,
                    kind: Literal["auto", "forward", "360"] = "auto", load_annotations: bool = True) -> Scene:
    """Load the scene described by ``root/transforms.json`` (see the module docstring)."""
    root = Path(root)
    source = root / TRANSFORMS
    data = read_transforms(source)
    check_same_size(data.paths, data.size, source)
    bounds = data.bounds if data.bounds is not None else layout_bounds(data.c2w, source)
    return assemble_scene(root, data.paths, data.c2w, bounds, data.intrinsics, data.size, downsample,
                          holdout_every, kind, load_annotations)
