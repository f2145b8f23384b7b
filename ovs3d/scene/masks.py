"""Object masks of object-centric captures (``masks/`` beside ``images/``, as ``maryrose_360_504`` has).

A mask is a greyscale image, 255 (or > 127) on the object, named after its image: ``masks/<stem>.png`` or
``masks/<stem>_mask.png``. With masks the background is removed (the data's notes say it moves between
capture passes): the training targets become C' = m C + (1 - m) b for a known background colour b, and the
field renders with that background (``train/reconstruct.py``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ovs3d.errors import InputError
from ovs3d.io.images import read_rgb

MASK_SUFFIXES = ("_mask.png", ".png")


def mask_path(folder: Path, image: Path) -> Path | None:
    """The mask file of ``image`` in ``folder`` (``<stem>_mask.png`` or ``<stem>.png``), or None."""
    for suffix in MASK_SUFFIXES:
        candidate = folder / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_object_masks(root: Path, image_paths: list[Path], size: tuple[int, int]) -> np.ndarray | None:
    """[N, H, W] float32 object masks in [0, 1] at ``size`` = (W, H) (area-averaged), or None without
    ``masks/``. Every image must have a mask (InputError naming the first image without one)."""
    folder = root / "masks"
    if not folder.is_dir():
        return None
    paths = [mask_path(folder, image) for image in image_paths]
    missing = [image for image, path in zip(image_paths, paths) if path is None]
    if missing:
        raise InputError(folder, f"{len(missing)} of {len(image_paths)} images have no mask (first: "
                         f"{missing[0].name}; expected {missing[0].stem}_mask.png or {missing[0].stem}.png)",
                         "add the missing masks, or move masks/ away to train on the full images")
    masks = np.stack([read_rgb(path, size)[..., 0] for path in paths])
    return (masks > 0.5).astype(np.float32) if masks.max() > 0 else masks
