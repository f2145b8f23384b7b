"""LLFF scenes: ``poses_bounds.npy`` + ``images/`` (method spec section 2).

Each row of ``poses_bounds.npy`` holds a 3x5 matrix [R | t | (H, W, f)] (row-major) and the near/far
bounds. LLFF's rotation columns are (down, right, back); we reorder them to (right, up, back) as
[c1, -c0, c2]. The poses are then normalised by ``scene/normalize.py``: forward-facing scenes are
recentred on their average pose and translations and bounds divided by s = 0.75 * min(near), so the
nearest bound becomes 1/0.75; 360-degree scenes are centred on the cameras' look-at point, with the
farthest camera at distance 1.

Difference from the authors: their average pose has x = z cross y, a reflection (det = -1), which
mirrors the whole scene in x. We build x = y cross z, a proper rotation, so the recentred scene is not
mirrored and the spiral path needs no sign flip. Renders are the same up to that mirror.
"""

from __future__ import annotations

import tokenize
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ovs3d.errors import InputError
from ovs3d.io.images import image_size, list_images, read_rgb
from ovs3d.scene.annotations import load_annotations as read_annotations
from ovs3d.scene.assemble import normalize_checked
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.layout import detect_kind
from ovs3d.scene.scene import Scene, holdout_split

# numpy parses a .npy header with ast/tokenize: a damaged one raises any of these, not only ValueError
NPY_HEADER_ERRORS = (ValueError, SyntaxError, tokenize.TokenError, TypeError, KeyError, OverflowError, MemoryError,
                     RecursionError)
POSES_FIX = "regenerate it with LLFF's imgs2poses or `ovs3d process-data`"
ROTATION_TOLERANCE = 1e-2
MAX_SIDE = 1 << 16
MAX_UPSCALE = 16  # LLFF's own files may give the full-resolution size of images stored 8x smaller


def load_pose_array(path: Path) -> np.ndarray:
    """The array of a ``.npy`` pose file, never unpickling anything; InputError for anything else."""
    if not path.is_file():
        raise InputError(path, "the pose file is not a regular file", POSES_FIX)
    try:
        with open(path, "rb") as handle:
            if handle.read(6) != b"\x93NUMPY":
                raise InputError(path, "the file is not a NumPy .npy array (it does not start with the .npy "
                                 "signature; a text, pickle or .npz file cannot be read)", POSES_FIX)
            handle.seek(0)
            data = np.load(handle, allow_pickle=False)
    except InputError:
        raise
    except NPY_HEADER_ERRORS as exc:
        if "pickle" in str(exc).lower():  # an object array: refused, whatever numpy's message suggests
            raise InputError(path, "the array holds Python objects (pickled data), not numbers", POSES_FIX) from None
        raise InputError(path, "the .npy file is truncated or its header is damaged", POSES_FIX) from None
    except (OSError, EOFError) as exc:
        raise InputError(path, f"cannot read the pose file ({type(exc).__name__}: truncated or unreadable)",
                         POSES_FIX) from None
    if not isinstance(data, np.ndarray) or data.dtype.kind not in "fiu" or data.dtype.fields is not None:
        raise InputError(path, f"expected a numeric array, got dtype {getattr(data, 'dtype', type(data).__name__)}",
                         POSES_FIX)
    return data


def read_poses_bounds(path: Path, n_images: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Parse and validate ``poses_bounds.npy``: (c2w [N, 3, 4] in LLFF axes, bounds [N, 2], (H, W, f))."""
    data = load_pose_array(Path(path))
    if data.ndim != 2 or data.shape[1] != 17:
        raise InputError(path, f"expected an array of shape (N, 17), got {data.shape}", POSES_FIX)
    if data.shape[0] != n_images:
        raise InputError(path, f"{data.shape[0]} pose rows for {n_images} images in images/",
                         "keep exactly one pose row per image (sorted file order); remove extra images "
                         "or regenerate the poses")
    data = data.astype(np.float64)
    if not np.all(np.isfinite(data)):
        rows = sorted(set(np.argwhere(~np.isfinite(data))[:, 0].tolist()))
        raise InputError(path, f"NaN or infinite values in pose rows {rows[:20]}",
                         "regenerate the poses, or remove those images and their rows")
    poses = data[:, :15].reshape(-1, 3, 5)
    bounds = data[:, 15:]
    if np.any(bounds <= 0):
        raise InputError(path, "near/far bounds must be positive", "regenerate the poses")
    bad = np.flatnonzero(bounds[:, 0] >= bounds[:, 1]).tolist()
    if bad:
        raise InputError(path, f"near is not smaller than far in pose rows {bad[:20]}", "regenerate the poses")
    rot = poses[:, :, :3]
    error = np.abs(np.einsum("nji,njk->nik", rot, rot) - np.eye(3)).max(axis=(1, 2))
    bad = np.flatnonzero(error > ROTATION_TOLERANCE).tolist()
    if bad:
        raise InputError(path, f"the rotation of pose rows {bad[:20]} is not orthonormal (scaled, sheared or "
                         "not a rotation)", "regenerate the poses")
    h, w, f = (float(x) for x in poses[0, :, 4])
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and f > 0):
        raise InputError(path, f"the first row's image height, width and focal length ({h:g}, {w:g}, {f:g}) "
                         f"must be positive, the sides at most {MAX_SIDE} pixels", POSES_FIX)
    return poses[:, :, :4].copy(), bounds, (h, w, f)


def llff_to_ovs3d(c2w_llff: np.ndarray) -> np.ndarray:
    """Reorder LLFF rotation columns (down, right, back) to (right, up, back): [c1, -c0, c2, t]."""
    return np.concatenate([c2w_llff[:, :, 1:2], -c2w_llff[:, :, 0:1], c2w_llff[:, :, 2:4]], axis=2)


def load_llff(root: str | Path, downsample: float = 1.0, holdout_every: int = 0,
              kind: Literal["auto", "forward", "360"] = "auto", load_annotations: bool = True) -> Scene:
    """Load an LLFF scene at (int(W / downsample), int(H / downsample)), H, W, f from the pose file.

    All validation (image count, poses, image sizes and decodability, annotations) happens before the
    images are decoded at full size, so bad input fails in seconds.
    """
    root = Path(root)
    paths = list_images(root / "images")
    c2w_llff, bounds, (h, w, f) = read_poses_bounds(root / "poses_bounds.npy", len(paths))
    sizes = {p: image_size(p) for p in paths}
    first = sizes[paths[0]]
    for p, size in sizes.items():
        if size != first:
            raise InputError(p, f"image size {size[0]}x{size[1]} differs from {paths[0].name}'s "
                                f"{first[0]}x{first[1]}", "resize all images of a scene to one size")
    if abs(first[0] / first[1] - w / h) > 0.02:
        raise InputError(root / "poses_bounds.npy", f"the images are {first[0]}x{first[1]} but the pose file "
                         f"says {w:.0f}x{h:.0f} (another aspect ratio)", "regenerate the poses for these images")
    if w > MAX_UPSCALE * first[0] or h > MAX_UPSCALE * first[1]:
        raise InputError(root / "poses_bounds.npy", f"the pose file says {w:.0f}x{h:.0f}, more than {MAX_UPSCALE} "
                         f"times the images' {first[0]}x{first[1]}", "regenerate the poses for these images")

    c2w_raw = llff_to_ovs3d(c2w_llff)
    kind = detect_kind(torch.from_numpy(c2w_raw)) if kind == "auto" else kind
    c2w, bounds, back = normalize_checked(root / "poses_bounds.npy", c2w_raw, bounds, kind)

    width, height = int(w / downsample), int(h / downsample)
    if width < 8 or height < 8:
        raise InputError(root, f"downsample {downsample} leaves a {width}x{height} image", "use a smaller factor")
    c2w_t = torch.tensor(c2w, dtype=torch.float32)
    cameras = Cameras(c2w_t, torch.tensor(f * width / w), torch.tensor(f * height / h),
                      torch.tensor(width / 2), torch.tensor(height / 2), width, height)
    annotations = (read_annotations(root, len(paths), (width, height), first) if load_annotations else None)
    images = np.stack([read_rgb(p, (width, height)) for p in paths])
    train, test = holdout_split(len(paths), holdout_every)
    return Scene(root=root, image_paths=paths, images=images, cameras=cameras, bounds=bounds.astype(np.float32),
                 kind=kind, train_views=train, test_views=test,
                 annotations=annotations, classes=list(annotations.classes) if annotations else [],
                 input_from_scene=back)
