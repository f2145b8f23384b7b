"""Image files: listing, reading (RGB in [0, 1]) and writing, with errors that name the file."""

from __future__ import annotations

import struct
import warnings
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ovs3d.errors import InputError, excerpt
from ovs3d.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
IMAGE_FIX = "replace or delete the corrupt file (and its pose row)"
# What Pillow raises for a file it cannot decode: besides its documented UnidentifiedImageError / OSError
# (truncated data) / SyntaxError, its format plugins let struct, zlib, value and index errors of a
# malformed header escape. A decompression bomb (more than Image.MAX_IMAGE_PIXELS pixels: a warning up
# to twice that, an error beyond) is refused too.
DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, IndexError, KeyError,
                 EOFError, struct.error, zlib.error, ZeroDivisionError, OverflowError, MemoryError)
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


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


@contextmanager
def image_errors(path: Path, action: str, fix: str | None) -> Iterator[None]:
    """Turn every decoding failure of ``path`` (and a decompression bomb) into InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except BOMB_ERRORS as exc:
        raise InputError(path, f"the image is too large to decode safely ({excerpt(exc).rstrip('.')})",
                         "downsize it (e.g. to at most 4000 pixels on the long side) or replace it") from exc
    except DECODE_ERRORS as exc:
        raise InputError(path, f"cannot {action} ({excerpt(exc) or type(exc).__name__})",
                         fix or IMAGE_FIX) from exc


def open_image(path: str | Path, fix: str | None = None) -> Image.Image:
    """Open and fully decode an image, EXIF orientation applied; a corrupt file (or one of more than
    ``Image.MAX_IMAGE_PIXELS`` pixels) raises InputError with ``fix`` (default: replace the file)."""
    path = Path(path)
    with image_errors(path, "decode the image", fix):
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the header only; a corrupt header (or a decompression bomb) raises InputError."""
    path = Path(path)
    with image_errors(path, "read the image header", None):
        with Image.open(path) as im:
            return im.size


def read_rgb(path: str | Path, size: tuple[int, int] | None = None,
             resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """Read an image as float32 RGB in [0, 1], shape [H, W, 3]; ``size`` = (width, height) resizes."""
    im = open_image(path)
    with image_errors(Path(path), f"convert the image (mode {im.mode}) to RGB", None):
        im = im.convert("RGB")
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
