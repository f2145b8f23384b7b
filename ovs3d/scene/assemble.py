"""Build a ``Scene`` from poses already converted to ovs3d's axes: the steps every non-LLFF loader shares.

A loader supplies the image files, the camera-to-world matrices in ovs3d's axes (right, up, back) in
the file's own world frame, the near/far bounds and the intrinsics at the stored image size; this
module checks the images, detects the scene type, normalises the poses (``scene/normalize.py``),
scales the intrinsics to the working resolution and reads images and annotations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ovs3d.errors import InputError
from ovs3d.io.images import image_size, read_rgb
from ovs3d.scene.annotations import load_annotations as read_annotations
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.layout import detect_kind
from ovs3d.scene.normalize import input_from_normalized, normalize_poses, normalizing_frame
from ovs3d.scene.scene import Scene, holdout_split


def check_same_size(paths: list[Path], size: tuple[int, int], source: Path) -> None:
    """Every image must exist and be ``size`` = (W, H) pixels, the size its intrinsics refer to."""
    for p in paths:
        if not p.is_file():
            raise InputError(p, f"the image named in {source.name} does not exist",
                             f"put the image there or remove it from {source.name}")
        actual = image_size(p)
        if actual != tuple(size):
            raise InputError(p, f"the image is {actual[0]}x{actual[1]} but {source.name} describes "
                                f"{size[0]}x{size[1]}", "resize all images of a scene to one size, matching the poses")


def check_normalized(source: Path, c2w: np.ndarray, bounds: np.ndarray) -> None:
    """The normalised poses must be finite with positive near < far: degenerate input (all cameras at one
    point, zero-length axes, extreme values) would otherwise give NaN rays much later."""
    with np.errstate(all="ignore"):
        finite = (np.all(np.isfinite(np.asarray(c2w, np.float32)))
                  and np.all(np.isfinite(np.asarray(bounds, np.float32))))
    if not (finite and np.all(bounds > 0) and np.all(bounds[:, 0] < bounds[:, 1])):
        raise InputError(source, "the camera poses are degenerate: normalising them gives non-finite values "
                         "(cameras at one point, zero-length axes or extreme coordinates)",
                         "regenerate the poses (e.g. `ovs3d process-data`)")


def normalize_checked(source: Path, c2w: np.ndarray, bounds: np.ndarray,
                      kind: Literal["forward", "360"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``normalize_poses`` whose failure on degenerate or extreme poses is an InputError naming ``source``;
    also returns the [4, 4] similarity from the normalised frame back to the pose file's (``Scene.input_from_scene``)."""
    try:
        with np.errstate(all="ignore"):
            back = input_from_normalized(*normalizing_frame(np.asarray(c2w, np.float64), np.asarray(bounds), kind))
            c2w, bounds = normalize_poses(c2w, bounds, kind)
    except np.linalg.LinAlgError:
        c2w = np.full_like(np.asarray(c2w, dtype=np.float64), np.nan)
        back = np.eye(4)
    check_normalized(source, c2w, bounds)
    return c2w, bounds, back


def assemble_scene(root: Path, paths: list[Path], c2w: np.ndarray, bounds: np.ndarray,
                   intrinsics: np.ndarray, size: tuple[int, int], downsample: float, holdout_every: int,
                   kind: Literal["auto", "forward", "360"], load_annotations: bool,
                   source: Path | None = None) -> Scene:
    """The scene at working size (int(W / downsample), int(H / downsample)).

    Args:
        paths: the N image files, in view order (sorted by name).
        c2w: [N, 3, 4] ovs3d axes, unnormalised; bounds: [N, 2] near/far in the same units.
        intrinsics: [N, 4] (fx, fy, cx, cy) in pixels at the stored size ``size`` = (W, H).
        source: the pose file named when the poses turn out degenerate (default: ``root``).
    """
    width_src, height_src = size
    width, height = int(width_src / downsample), int(height_src / downsample)
    if width < 8 or height < 8:
        raise InputError(root, f"downsample {downsample} leaves a {width}x{height} image", "use a smaller factor")
    intrinsics = np.asarray(intrinsics, dtype=np.float64)
    if not (np.all(np.isfinite(intrinsics.astype(np.float32))) and np.all(intrinsics[:, :2] > 0)):
        raise InputError(source or root, "the focal lengths must be positive and the intrinsics finite",
                         "fix the camera intrinsics (fx, fy, cx, cy)")
    if kind == "auto":
        kind = detect_kind(torch.from_numpy(np.asarray(c2w, dtype=np.float64)))
    c2w, bounds, back = normalize_checked(source or root, c2w, bounds, kind)
    sx, sy = width / width_src, height / height_src
    k = torch.tensor(intrinsics, dtype=torch.float32)
    cameras = Cameras(torch.tensor(c2w, dtype=torch.float32), k[:, 0] * sx, k[:, 1] * sy, k[:, 2] * sx,
                      k[:, 3] * sy, width, height)
    annotations = read_annotations(root, len(paths), (width, height), size) if load_annotations else None
    images = np.stack([read_rgb(p, (width, height)) for p in paths])
    train, test = holdout_split(len(paths), holdout_every)
    return Scene(root=root, image_paths=list(paths), images=images, cameras=cameras,
                 bounds=bounds.astype(np.float32), kind=kind, train_views=train, test_views=test,
                 annotations=annotations, classes=list(annotations.classes) if annotations else [],
                 input_from_scene=back)
