"""COLMAP scenes: ``images/`` + ``sparse/0`` (a model read through ``pycolmap.Reconstruction``).

Convention change at this boundary: COLMAP stores world-to-camera [R | t] with camera axes (right,
down, forward); ovs3d's camera-to-world is c2w = [R^T | -R^T t] with the y and z columns negated
(right, up, back). Near/far bounds per camera are the 0.1 and 99.9 percentiles of the depths of the
sparse points that camera observes, exactly as LLFF's ``imgs2poses`` computes them, and the poses are
normalised like every other format (``scene/normalize.py``). So a ``poses_bounds.npy`` that LLFF's
tool (or ``ovs3d process-data``) made from this model gives the same cameras, with one documented
difference: ``poses_bounds.npy`` holds a single focal length (the first image's), while this loader
keeps each image's own intrinsics. Lens distortion is ignored, as LLFF does (warned when present).

The views are the model's registered images, sorted by name; images in ``images/`` that the model
does not contain are left out (named in a warning), so annotation indices refer to registered images.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import numpy as np

from ovs3d.errors import InputError, shown
from ovs3d.io.images import IMAGE_SUFFIXES
from ovs3d.scene.assemble import assemble_scene, check_same_size
from ovs3d.scene.colmap_sfm import SparseModel, read_model
from ovs3d.scene.scene import Scene

MODEL_DIR = Path("sparse") / "0"
NEAR_PERCENTILE, FAR_PERCENTILE = 0.1, 99.9
DISTORTION_WARN = 1e-3


def colmap_to_ovs3d(cam_from_world: np.ndarray) -> np.ndarray:
    """[N, 3, 4] COLMAP world-to-camera (right, down, forward) -> ovs3d c2w (right, up, back)."""
    rot_t = np.transpose(cam_from_world[:, :, :3], (0, 2, 1))
    centers = -np.einsum("nij,nj->ni", rot_t, cam_from_world[:, :, 3])
    c2w = np.concatenate([rot_t, centers[:, :, None]], axis=2)
    c2w[:, :, 1:3] *= -1.0
    return c2w


def ovs3d_to_colmap(c2w: np.ndarray) -> np.ndarray:
    """Inverse of ``colmap_to_ovs3d``: [N, 3, 4] ovs3d c2w -> COLMAP world-to-camera [R | t]."""
    rot = np.array(c2w[:, :, :3], dtype=np.float64)
    rot[:, :, 1:3] *= -1.0
    rot_w2c = np.transpose(rot, (0, 2, 1))
    t = -np.einsum("nij,nj->ni", rot_w2c, c2w[:, :, 3])
    return np.concatenate([rot_w2c, t[:, :, None]], axis=2)


def point_depth_bounds(model: SparseModel, source: Path) -> np.ndarray:
    """[N, 2] near/far per view: 0.1 / 99.9 percentiles of the depths (camera-frame z) of the points it
    observes (each point counted once per view)."""
    obs = np.unique(model.observations, axis=0)
    rot_z = model.cam_from_world[obs[:, 0], 2, :3]
    depths = np.einsum("mj,mj->m", rot_z, model.points[obs[:, 1]]) + model.cam_from_world[obs[:, 0], 2, 3]
    bounds = np.empty((len(model.names), 2))
    for view, name in enumerate(model.names):
        z = depths[(obs[:, 0] == view) & (depths > 0)]
        if z.size == 0:
            raise InputError(source, f"image {name} observes no sparse point in front of it, so its depth "
                                     "range is unknown", "rerun the reconstruction or remove that image")
        bounds[view] = np.percentile(z, [NEAR_PERCENTILE, FAR_PERCENTILE])
        if not bounds[view, 0] < bounds[view, 1]:
            raise InputError(source, f"image {name} observes sparse points at a single depth only, so its depth "
                                     "range is unknown", "rerun the reconstruction or remove that image")
    return bounds


def load_colmap(root: str | Path, downsample: float = 1.0, holdout_every: int = 0,
                kind: Literal["auto", "forward", "360"] = "auto", load_annotations: bool = True) -> Scene:
    """Load ``root/images`` posed by the COLMAP model ``root/sparse/0`` (see the module docstring)."""
    root = Path(root)
    model_dir = root / MODEL_DIR
    model = read_model(model_dir)
    sizes = {tuple(int(v) for v in s) for s in model.sizes}
    if len(sizes) != 1:
        raise InputError(model_dir, f"the model's cameras have several image sizes {sorted(sizes)}",
                         "give all images of a scene one size and rerun the reconstruction")
    size = sizes.pop()
    if model.distortion.max() > DISTORTION_WARN:
        worst = model.names[int(model.distortion.argmax())]
        warnings.warn(f"{model_dir}: lens distortion up to {model.distortion.max():.3g} ({worst}, "
                      f"model {model.models[0]}) is ignored; undistort the images (colmap image_undistorter) "
                      "for exact rays", stacklevel=2)
    for name in model.names:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise InputError(model_dir, f"the image name {shown(name)} is not a path inside images/",
                             "rerun the reconstruction on the scene's images/ folder")
    paths = [root / "images" / name for name in model.names]
    check_same_size(paths, size, model_dir)
    registered = set(model.names)
    image_dir = root / "images"
    others = sorted(p.name for p in image_dir.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and p.name not in registered)
    if others:
        warnings.warn(f"{model_dir}: {len(others)} image(s) of images/ are not in the model and are left out: "
                      f"{', '.join(others[:10])}{' ...' if len(others) > 10 else ''}", stacklevel=2)
    intrinsics = np.stack([model.fx, model.fy, model.cx, model.cy], axis=1)
    return assemble_scene(root, paths, colmap_to_ovs3d(model.cam_from_world), point_depth_bounds(model, model_dir),
                          intrinsics, size, downsample, holdout_every, kind, load_annotations, source=model_dir)
