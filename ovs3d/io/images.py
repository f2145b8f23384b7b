"""Image files: listing, reading (RGB in [0, 1]) and writing, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovs3d.errors import InputError
from ovs3d.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` sorted by file name (this order defines the image index)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "the images folder does not exist",
                         "put the scene's photos in an 'images/' folder inside the scene folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(folder, "the images folder holds no images (.png/.jpg/.jpeg)",
                         "copy the scene's photos into this folder")
    return files


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image, EXIF orientation applied; a corrupt file raises InputError."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(path, f"cannot decode the image ({exc})",
                         "replace or delete the corrupt file (and its pose row)") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the header only; a corrupt header raises InputError."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InputError(path, f"cannot read the image header ({exc})",
                         "replace or delete the corrupt file (and its pose row)") from exc


def read_rgb(path: str | Path, size: tuple[int, int] | None = None,
             resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], shape [H, W, 3]; ``size`` = (width, height) resizes."""
    im = open_image(path).convert("RGB")
    if size is not None and im.size != tuple(size):
        im = im.resize(tuple(size), resample)
    return np.asarray(im, dtype=np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] (any shape) -> uint8 with rounding and clipping."""
    return (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> None:
    """Write [H, W], [H, W, 3] or [H, W, 4] (float in [0, 1] or uint8) as a PNG, atomically."""
    array = image if image.dtype == np.uint8 else to_uint8(image)
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
