"""Ground-truth annotations in the 3D-OVS layout (method spec sections 2.8-2.9).

``segmentations/classes.txt`` holds one prompt per line. Each annotated view has a folder
``segmentations/<image index>/`` (integer name, e.g. ``04``) with one binary mask ``<prompt>.png`` per
class. Masks are converted to grayscale, resized with NEAREST to the working size, and only the value
255 counts as foreground. A pixel may carry zero, one or several labels.

Class order: we keep the order of ``classes.txt``. The authors sort it case-sensitively; the order
changes only the colours and indices, never a metric.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ovs3d.errors import InputError
from ovs3d.io.images import open_image


@dataclass
class Annotations:
    """Per-view ground truth.

    Attributes:
        classes: the C prompts, in ``classes.txt`` order.
        views: the annotated image indices, ascending.
        labels: [n_views, H, W, C] uint8 in {0, 1}.
    """

    classes: list[str]
    views: list[int]
    labels: np.ndarray


def read_classes(path: str | Path) -> list[str]:
    """Class prompts of a ``classes.txt``: stripped lines; empty or duplicate lines are errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the class list does not exist", "write one class prompt per line in this file")
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(path, "the class list is empty", "write one class prompt per line")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise InputError(path, f"line {number} is empty", "remove the empty line")
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        if line in seen:
            raise InputError(path, f"line {number} repeats the class '{line}'", "keep each class once")
        seen.add(line)
    return lines


def annotated_views(seg_dir: Path, n_images: int) -> list[tuple[int, Path]]:
    """(image index, folder) for each annotated view, sorted by index; names must be integers < n_images,
    one folder per index. Hidden folders (name starting with '.') are ignored."""
    views: dict[int, Path] = {}
    for folder in sorted(p for p in seg_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            index = int(folder.name)
        except ValueError:
            raise InputError(folder, "an annotation folder name is not an image index",
                             "name each annotated view's folder by its image index in sorted order, e.g. '04'") from None
        if not 0 <= index < n_images:
            raise InputError(folder, f"image index {index} is out of range (the scene has {n_images} images)",
                             "name the folder by the index of its image in sorted order")
        if index in views:
            raise InputError(folder, f"image {index} already has the annotation folder '{views[index].name}'",
                             "keep one folder per annotated view and merge or delete the other")
        views[index] = folder
    return sorted(views.items())


def read_mask(path: Path, size: tuple[int, int], source_size: tuple[int, int]) -> np.ndarray:
    """Binary mask [H, W] uint8: grayscale, NEAREST-resized to ``size`` = (W, H), 1 where the value is 255.

    ``source_size`` is the scene's stored image size; a mask of another size is an error."""
    im = open_image(path)
    if im.size != tuple(source_size):
        raise InputError(path, f"the mask is {im.size[0]}x{im.size[1]} but the images are "
                               f"{source_size[0]}x{source_size[1]}", "save the mask at the image's size")
    gray = im.convert("L")
    if gray.size != tuple(size):
        gray = gray.resize(tuple(size), Image.Resampling.NEAREST)
    return (np.asarray(gray) == 255).astype(np.uint8)


def load_annotations(scene_root: str | Path, n_images: int, size: tuple[int, int],
                     source_size: tuple[int, int]) -> Annotations | None:
    """Read ``segmentations/`` of a scene; None when the scene has no ``classes.txt``.

    Args:
        n_images: number of images (bounds the view indices).
        size: working (W, H); source_size: the stored images' (W, H).
    """
    seg_dir = Path(scene_root) / "segmentations"
    if not (seg_dir / "classes.txt").is_file():
        return None
    classes = read_classes(seg_dir / "classes.txt")
    views = annotated_views(seg_dir, n_images)
    # Check every mask exists before decoding any of them (fail fast on a missing file).
    for _, folder in views:
        for name in classes:
            if not (folder / f"{name}.png").is_file():
                raise InputError(folder / f"{name}.png", f"the mask of class '{name}' is missing",
                                 "add a binary PNG (255 = class) named exactly as the prompt")
    width, height = size
    labels = np.zeros((len(views), height, width, len(classes)), dtype=np.uint8)
    for v, (_, folder) in enumerate(views):
        for c, name in enumerate(classes):
            labels[v, :, :, c] = read_mask(folder / f"{name}.png", size, source_size)
    return Annotations(classes=classes, views=[index for index, _ in views], labels=labels)
