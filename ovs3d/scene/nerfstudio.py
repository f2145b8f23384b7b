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
like every other format (``scene/normalize.py``). Images of ``images/`` that no frame names are left
out with a warning, and refused when the scene has annotated views, whose folder indices count the
frames (the error says which images to move out of ``images/``). Every field is type-checked: a
malformed file is an ``InputError`` naming the frame and the field, never a raw exception.
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

from ovs3d.errors import InputError, excerpt, shown
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.images import IMAGE_SUFFIXES, image_size
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


JSON_FIX = "fix or regenerate transforms.json (e.g. `ovs3d process-data`)"
MAX_SIDE = 1 << 16


def json_type(value) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {dict: "object", list: "array", str: "string", int: "number", float: "number"}.get(type(value), "value")


def number(value, what: str, source: Path, positive: bool = False) -> float:
    """A finite JSON number (not a boolean), positive when asked; else InputError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(source, f"{what} is a JSON {json_type(value)}, not a number", JSON_FIX)
    try:
        result = float(value)
    except OverflowError:
        result = math.inf
    if not math.isfinite(result) or (positive and result <= 0):
        raise InputError(source, f"{what} is {value!r}; it must be a finite{' positive' if positive else ''} number",
                         JSON_FIX)
    return result


def side(value, what: str, source: Path) -> int:
    """An image side in pixels: a positive whole number up to MAX_SIDE."""
    result = number(value, what, source, positive=True)
    if result != int(result) or result > MAX_SIDE:
        raise InputError(source, f"{what} is {value!r}; it must be a whole number of pixels from 1 to {MAX_SIDE}",
                         JSON_FIX)
    return int(result)


def frame_image_path(folder: Path, file_path: str) -> Path:
    """The image a frame names; Blender's paths without an extension get ``.png``."""
    path = Path(os.path.normpath(folder / file_path))
    if path.name and not path.suffix and path.with_suffix(".png").is_file():
        path = path.with_suffix(".png")
    return path


def frame_name(frame: dict, index: int) -> str:
    """How a message names a frame: its file_path when it is a string, else its position."""
    value = frame.get("file_path")
    return shown(value) if isinstance(value, str) else f"#{index}"


def frame_intrinsics(meta: dict, frame: dict, path: Path, source: Path,
                     name: str | None = None) -> tuple[tuple[float, ...], tuple[int, int]]:
    """((fx, fy, cx, cy), (w, h)) of one frame: its own keys, else the file's shared ones."""
    name = name or shown(str(frame.get("file_path")))

    def get(key):
        return frame.get(key, meta.get(key))

    w, h = get("w"), get("h")
    if w is None or h is None:
        if not path.is_file():
            raise InputError(path, f"the image named in {source.name} does not exist",
                             f"put the image there or remove its frame from {source.name}")
        w, h = image_size(path)
    w, h = side(w, f"frame {name}: w", source), side(h, f"frame {name}: h", source)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and fy is None:
        angle = get("camera_angle_x")
        if angle is None:
            raise InputError(source, f"frame {name} has no focal length",
                             "give fl_x/fl_y (pixels) or camera_angle_x (radians), at the top level or per frame")
        angle = number(angle, f"frame {name}: camera_angle_x", source, positive=True)
        if angle >= math.pi:
            raise InputError(source, f"frame {name}: camera_angle_x is {angle:g} radians, not below pi",
                             "give the horizontal field of view in radians")
        fx = fy = 0.5 * w / math.tan(0.5 * angle)
    fx = number(fx if fx is not None else fy, f"frame {name}: fl_x", source, positive=True)
    fy = number(fy if fy is not None else fx, f"frame {name}: fl_y", source, positive=True)
    cx, cy = get("cx"), get("cy")
    cx = w / 2 if cx is None else number(cx, f"frame {name}: cx", source)
    cy = h / 2 if cy is None else number(cy, f"frame {name}: cy", source)
    return (fx, fy, cx, cy), (w, h)


def parse_matrix(frame: dict, source: Path, name: str | None = None) -> np.ndarray:
    """[3, 4] camera-to-world of a frame (``transform_matrix`` 4x4 or 3x4), finite, rotation orthonormal."""
    name = name or shown(str(frame.get("file_path")))
    try:
        value = frame["transform_matrix"]
        if isinstance(value, (str, bytes, dict)):
            raise TypeError(f"a JSON {json_type(value)}")
        matrix = np.asarray(value, dtype=np.float64)
    except (KeyError, ValueError, TypeError, OverflowError) as exc:
        raise InputError(source, f"frame {name} has no valid transform_matrix ({excerpt(exc, 80)})",
                         "give each frame a 4x4 camera-to-world transform_matrix") from None
    if matrix.shape not in ((4, 4), (3, 4)) or not np.all(np.isfinite(matrix)):
        raise InputError(source, f"frame {name}: transform_matrix must be a finite 4x4 matrix",
                         "give each frame a 4x4 camera-to-world transform_matrix")
    rot = matrix[:3, :3]
    with np.errstate(all="ignore"):
        orthonormal = np.allclose(rot.T @ rot, np.eye(3), atol=1e-3)
    if not orthonormal:
        raise InputError(source, f"frame {name}: the rotation of transform_matrix is not "
                         "orthonormal (scaled or sheared)", "store rigid camera-to-world transforms")
    return matrix[:3]


def read_json(path: Path) -> object:
    """The parsed JSON of a file (UTF-8); InputError for a missing, unreadable, non-UTF-8 or invalid file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read the JSON file ({exc.strerror or exc})", "make the file readable") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"the file is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})",
                         "save it as UTF-8") from None
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError(path, f"the file is not valid JSON ({excerpt(exc, 120)})", JSON_FIX) from None


def read_transforms(path: str | Path) -> Transforms:
    """Parse and validate a ``transforms.json`` (see the module docstring)."""
    path = Path(path)
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise InputError(path, f"the file holds a JSON {json_type(meta)}, not an object with a 'frames' list",
                         "list the images under 'frames' with file_path and transform_matrix")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise InputError(path, "no 'frames' list" if not isinstance(frames, list) else "the 'frames' list is empty",
                         "list the images under 'frames' with file_path and transform_matrix")
    for index, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise InputError(path, f"frame #{index} is a JSON {json_type(frame)}, not an object",
                             "give every frame file_path and transform_matrix")
    model = meta.get("camera_model", "PINHOLE")
    if not isinstance(model, str) or model.upper() not in PERSPECTIVE_MODELS:
        raise InputError(path, f"camera_model {shown(str(model))} is not a perspective camera",
                         "undistort the images to a pinhole camera first")
    distortion = 0.0
    for index, frame in enumerate(frames):
        for key in DISTORTION_KEYS:
            value = frame.get(key, meta.get(key, 0.0))
            distortion = max(distortion, abs(number(value, f"frame {frame_name(frame, index)}: {key}", path)))
    if distortion > 1e-3:
        warnings.warn(f"{path}: lens distortion coefficients are ignored; undistort the images for exact rays",
                      stacklevel=2)
    folder = path.parent
    entries = []
    for index, frame in enumerate(frames):
        file_path = frame.get("file_path")
        if file_path is None:
            raise InputError(path, f"frame #{index} has no file_path", "give every frame the path of its image")
        if not isinstance(file_path, str) or not file_path or "\x00" in file_path:
            raise InputError(path, f"frame #{index}: file_path must be a non-empty string without NUL characters",
                             "give every frame the path of its image, relative to transforms.json")
        name = shown(file_path)
        image = frame_image_path(folder, file_path)
        intr, size = frame_intrinsics(meta, frame, image, path, name)
        near, far = frame.get("near", meta.get("near")), frame.get("far", meta.get("far"))
        bounds = None
        if near is not None and far is not None:
            bounds = (number(near, f"frame {name}: near", path), number(far, f"frame {name}: far", path))
        entries.append((image, parse_matrix(frame, path, name), intr, size, bounds))
    entries.sort(key=lambda e: str(e[0]))
    for a, b in zip(entries, entries[1:]):
        if a[0] == b[0]:
            raise InputError(path, f"two frames name the image {a[0]}", "keep one frame per image")
    sizes = {e[3] for e in entries}
    if len(sizes) != 1:
        raise InputError(path, f"the frames have several image sizes {sorted(sizes)[:5]}",
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
    try:
        with np.errstate(all="ignore"):
            depth = np.einsum("ni,ni->n", look_at_center(c2w) - c2w[:, :, 3], -c2w[:, :, 2])
    except np.linalg.LinAlgError:
        depth = np.zeros(len(c2w))
    if len(c2w) < 2 or not np.all(np.isfinite(depth) & (depth > 0)):
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
    check_unlisted_images(root, data.paths, source, load_annotations)
    bounds = data.bounds if data.bounds is not None else layout_bounds(data.c2w, source)
    return assemble_scene(root, data.paths, data.c2w, bounds, data.intrinsics, data.size, downsample,
                          holdout_every, kind, load_annotations, source=source)


def check_unlisted_images(root: Path, paths: list[Path], source: Path, load_annotations: bool) -> None:
    """Images of ``root/images`` that no frame names (fewer frames than images): left out with a warning;
    an error when the scene has annotated views, whose folder indices count the frames, not the files."""
    image_dir = root / "images"
    if not image_dir.is_dir():
        return
    listed = {os.path.normcase(str(p)) for p in paths}
    unlisted = sorted(p.name for p in image_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                      and os.path.normcase(os.path.normpath(p)) not in listed)
    if not unlisted:
        return
    names = ", ".join(unlisted[:10]) + (" ..." if len(unlisted) > 10 else "")
    what = f"{len(unlisted)} image(s) of images/ have no frame in {source.name} ({names})"
    seg = root / "segmentations"
    annotated = load_annotations and (seg / "classes.txt").is_file() and any(
        p.is_dir() and not p.name.startswith(".") for p in seg.iterdir())
    if annotated:
        raise InputError(source, f"{what}, so the annotation folder indices (which count the {len(paths)} frames "
                         "in file-path order) do not count the files of images/",
                         "move the images without a frame out of images/ (renumbering the annotation folders "
                         "to count only the images that have a frame), or add a frame for each of them")
    warnings.warn(f"{source}: {what}; they are left out (move them out of images/, or add their frames, "
                  "to silence this)", stacklevel=3)
