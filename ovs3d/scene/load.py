"""``load_scene``: read a scene folder, dispatching on its pose format (LLFF, nerfstudio, COLMAP)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from ovs3d.errors import InputError
from ovs3d.scene.colmap import load_colmap
from ovs3d.scene.llff import load_llff
from ovs3d.scene.masks import read_object_masks
from ovs3d.scene.nerfstudio import load_nerfstudio
from ovs3d.scene.scene import Scene


def load_scene(root: str | Path, downsample: float = 1.0, holdout_every: int = 0,
               kind: Literal["auto", "forward", "360"] = "auto", load_annotations: bool = True) -> Scene:
    """Load a scene folder; the first pose file found decides the format: LLFF ``poses_bounds.npy``,
    nerfstudio ``transforms.json``, then a COLMAP model ``sparse/0``.

    Args:
        root: the scene folder (``images/`` + poses).
        downsample: the working resolution is the stored pose file's (W, H) divided by this.
        holdout_every: hold out every n-th image for evaluation (0: none, all images train).
        kind: the scene type; ``auto`` detects it from the camera layout.
        load_annotations: read ``segmentations/`` when present.

    ``masks/`` (object masks, ``scene/masks.py``) is read whenever present.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise InputError(root, "this is a file, not a scene folder", "pass the folder that holds images/ and the poses")
    if not root.is_dir():
        raise InputError(root, "the scene folder does not exist", "pass the path of a scene folder")
    options = dict(downsample=downsample, holdout_every=holdout_every, kind=kind, load_annotations=load_annotations)
    loaders = [("poses_bounds.npy", load_llff), ("transforms.json", load_nerfstudio), ("sparse/0", load_colmap)]
    for pose_file, loader in loaders:
        if (root / pose_file).exists():
            scene = loader(root, **options)
            scene.object_masks = read_object_masks(root, scene.image_paths, (scene.width, scene.height))
            return scene
    raise InputError(root, "no camera poses found (expected poses_bounds.npy, transforms.json or sparse/0)",
                     "run `ovs3d process-data --images <photos> --out <scene>` to compute poses")
