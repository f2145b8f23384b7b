"""The feature cache: one float16 ``.npy`` per image, keyed by ``meta.json``.

Folder: ``<scene>/features/<kind>-<slug>-<hash>/`` where ``hash`` is a digest of ``meta["key"]``, the
extraction config (encoder identity, pyramid, resolution, storage). It holds ``meta.json`` (``key``,
``images``: the image list with sizes and modification times, and derived fields such as ``shape``
and the encoder's display name ``encoder``) and ``<image stem>.npy`` per image.

Maps are channel-first in memory and in ``meta["shape"]``: CLIP hierarchies ``[S, D, h, w]`` (S scales,
L2-normalised along D per scale and pixel), DINO maps ``[D, h, w]`` (L2-normalised along D per cell).
On disk they are stored pixel-major, ``[h, w, S, D]`` and ``[h, w, D]``, so that the features of one
pixel are one contiguous row: a training batch reads 4 rows per ray (bilinear corners) instead of
S * D scattered values, and touches pages in proportion to the batch, not to the cache.

Rules:
- a folder whose ``meta.json`` has another ``key`` or ``images`` than the requested one has its
  feature files deleted and is rebuilt, never reused;
- every file is written to a temporary name and renamed (``ovs3d.io.atomic``), so a present file is
  complete; an interrupted extraction resumes at the first missing image;
- a file whose header (shape, dtype) is not the expected one (for instance a channel-first file of an
  earlier ovs3d) is recomputed;
- damage is never a crash: a ``meta.json`` that is not UTF-8 JSON of the expected structure counts as
  absent (the folder is rebuilt by extraction, and readers get an InputError asking to extract), a
  feature file that is truncated, edited or not a plain float16 ``.npy`` counts as missing, and a file
  damaged between the check and a read raises InputError naming it (never a raw NumPy error); nothing
  is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import re
import tokenize
from pathlib import Path
from typing import Callable

import numpy as np

from ovs3d.errors import InputError
from ovs3d.io.atomic import atomic_path, write_json_atomic

META_NAME = "meta.json"
CACHE_DTYPE = np.float16


def config_hash(config: dict) -> str:
    """10 hex digits of the SHA-1 of the canonical JSON of ``config``."""
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]


def slug(text: str) -> str:
    """A file-name-safe short form: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60]


def cache_folder(scene_root: str | Path, kind: str, label: str, key: dict) -> Path:
    """``<scene>/features/<kind>-<slug(label)>-<hash of key>``."""
    return Path(scene_root) / "features" / f"{kind}-{slug(label)}-{config_hash(key)}"


def image_records(paths: list[Path]) -> list[dict]:
    """What identifies the source images: name, byte size, modification time."""
    return [{"name": p.name, "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns} for p in paths]


EXTRACT_FIX = "run `ovs3d extract --data <scene>` with the same options (it rebuilds a damaged cache)"


def valid_meta(meta: object) -> bool:
    """Whether a parsed ``meta.json`` has the structure every reader relies on: an object with a ``key``
    object, an ``images`` list of objects with a string ``name``, and a ``shape`` list of positive ints."""
    if not isinstance(meta, dict) or not isinstance(meta.get("key"), dict):
        return False
    images, shape = meta.get("images"), meta.get("shape")
    if not isinstance(images, list) or not all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                               and r["name"] for r in images):
        return False
    if "encoder" in meta and not isinstance(meta["encoder"], str):
        return False
    return (isinstance(shape, list) and len(shape) >= 3
            and all(isinstance(n, int) and not isinstance(n, bool) and 0 < n < 1 << 31 for n in shape))


def read_meta(folder: Path) -> dict | None:
    """The folder's ``meta.json``; None when it is absent or damaged (not UTF-8 JSON of the expected
    structure, see ``valid_meta``), which makes extraction rebuild the folder."""
    path = Path(folder) / META_NAME
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # ValueError: JSONDecodeError and UnicodeDecodeError
        return None
    return meta if valid_meta(meta) else None


def same_source(a: dict | None, b: dict) -> bool:
    """Whether two metas describe the same features: equal ``key`` and ``images`` (JSON-normalised)."""
    if a is None:
        return False
    a, b = json.loads(json.dumps(a)), json.loads(json.dumps(b))
    return a.get("key") == b["key"] and a.get("images") == b["images"]


def prepare_folder(folder: Path, meta: dict) -> bool:
    """Make ``folder`` hold ``meta``; if it held features of another source (or none), delete its
    ``.npy`` files. Returns True when the existing files are kept for reuse."""
    folder = Path(folder)
    stored = read_meta(folder)
    if same_source(stored, meta) and stored.get("shape") == list(meta["shape"]):
        write_json_atomic(folder / META_NAME, meta)
        return True
    if folder.is_dir():
        for stale in folder.glob("*.npy"):
            stale.unlink()
    write_json_atomic(folder / META_NAME, meta)
    return False


def feature_path(folder: Path, image_path: Path) -> Path:
    return Path(folder) / f"{Path(image_path).stem}.npy"


def disk_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Channel-first ``[*C, h, w]`` -> the pixel-major shape on disk ``(h, w, *C)``."""
    return (*shape[-2:], *shape[:-2])


def pixel_major(array: np.ndarray) -> np.ndarray:
    """``[*C, h, w]`` -> ``[h, w, *C]`` (a view)."""
    return np.moveaxis(array, (-2, -1), (0, 1))


def channel_first(array: np.ndarray) -> np.ndarray:
    """``[h, w, *C]`` -> ``[*C, h, w]`` (a view)."""
    return np.moveaxis(array, (0, 1), (-2, -1))


# numpy parses a .npy header with ast/tokenize: a damaged one raises any of these, not only ValueError
NPY_ERRORS = (OSError, ValueError, EOFError, SyntaxError, tokenize.TokenError, TypeError, KeyError, OverflowError,
              MemoryError, RecursionError)


def open_map(path: Path, mmap: bool) -> np.ndarray:
    """A cache file as an array (memory-mapped when ``mmap``), never unpickled; NPY_ERRORS for a file
    that is not a plain ``.npy`` (an ``.npz`` archive counts as such an error too)."""
    with open(path, "rb") as handle:
        if handle.read(6) != b"\x93NUMPY":
            raise ValueError("not a .npy file")
    array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    if not isinstance(array, np.ndarray):
        raise ValueError("not a .npy array")
    return array


def header_matches(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a readable float16 ``.npy`` holding a channel-first ``shape`` map pixel-major."""
    try:
        array = open_map(path, mmap=True)
    except NPY_ERRORS:
        return False
    return array.shape == disk_shape(tuple(shape)) and array.dtype == CACHE_DTYPE


def load_map(path: Path, shape: tuple[int, ...] | None = None, mmap: bool = False) -> np.ndarray:
    """A cache file, pixel-major, checked against ``shape`` (channel-first) when given; a file damaged
    since the cache was checked raises InputError naming it."""
    try:
        array = open_map(path, mmap)
    except NPY_ERRORS as exc:
        raise InputError(path, f"the feature file is damaged or truncated ({type(exc).__name__})",
                         f"delete it and {EXTRACT_FIX}") from None
    if array.dtype != CACHE_DTYPE or (shape is not None and array.shape != disk_shape(tuple(shape))):
        raise InputError(path, f"the feature file holds a {array.dtype} array of shape {array.shape}, not the "
                         f"cache's", f"delete it and {EXTRACT_FIX}")
    return array


def save_array(path: Path, array: np.ndarray) -> None:
    """Write a channel-first map ``[*C, h, w]`` as a pixel-major float16 ``.npy`` ``[h, w, *C]``, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(pixel_major(array), dtype=CACHE_DTYPE))


def read_array(path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """A cache file read whole into memory, back in channel-first order ``[*C, h, w]`` (float16, a view);
    InputError when it is damaged (or not of ``shape``, when given)."""
    return channel_first(load_map(Path(path), shape))


def fill_cache(folder: Path, meta: dict, image_paths: list[Path], shape: tuple[int, ...],
               compute: Callable[[int], np.ndarray], progress: Callable[[int, int, bool], None] | None = None) -> Path:
    """Ensure ``folder`` holds ``meta`` and one ``shape`` array per image, computing only what is missing.

    ``compute(i)`` returns image i's array; ``progress(i, n, reused)`` is called after each image."""
    prepare_folder(folder, meta)
    for index, image_path in enumerate(image_paths):
        target = feature_path(folder, image_path)
        reused = target.is_file() and header_matches(target, shape)
        if not reused:
            save_array(target, compute(index))
        if progress is not None:
            progress(index, len(image_paths), reused)
    return folder


def is_complete(folder: Path, source: dict | None = None) -> bool:
    """Whether every image named in the folder's meta has a feature file of the meta's shape (and, when
    ``source`` = {"key", "images"} is given, whether the folder holds features of that source)."""
    stored = read_meta(folder)
    if stored is None or (source is not None and not same_source(stored, source)):
        return False
    shape = tuple(stored["shape"])
    return all(header_matches(Path(folder) / f"{Path(r['name']).stem}.npy", shape) for r in stored["images"])


def feature_files(folder: str | Path) -> list[Path]:
    """The per-image files of a complete cache, in image order (InputError when incomplete)."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None or not is_complete(folder):
        raise InputError(folder, "the feature cache is missing, incomplete or damaged", EXTRACT_FIX)
    if not isinstance(meta.get("encoder"), str):
        raise InputError(folder / META_NAME, "the cache's meta.json names no encoder", EXTRACT_FIX)
    return [folder / f"{Path(r['name']).stem}.npy" for r in meta["images"]]


class FeatureMaps:
    """Read side of a complete cache, for training and testing.

    A file is memory-mapped only for the duration of one read and unmapped at its end, so between reads
    the process holds none of the cache: training on every view of a scene costs the rows a batch reads,
    not the cache's size (the pages stay in the kernel's page cache, shared and reclaimable).

    ``sample`` gathers features at pixel positions given in normalised image coordinates, so callers at
    any image resolution read the same maps; ``dense`` reads a whole map; ``block`` a square window."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.paths = feature_files(self.folder)
        self.meta = read_meta(self.folder)
        self._arrays: list[np.ndarray] | None = None

    @classmethod
    def from_arrays(cls, arrays: list[np.ndarray], encoder: str) -> "FeatureMaps":
        """Maps held in memory (channel-first arrays of one shape), read like a cache: for tests."""
        maps = cls.__new__(cls)
        maps.folder, maps.paths = None, []
        maps.meta = {"encoder": encoder, "shape": list(arrays[0].shape)}
        maps._arrays = [np.ascontiguousarray(pixel_major(a)) for a in arrays]
        return maps

    def __len__(self) -> int:
        return len(self._arrays) if self._arrays is not None else len(self.paths)

    @property
    def encoder(self) -> str:
        """The display name of the encoder that made the features (e.g. '... (not CLIP)')."""
        return self.meta["encoder"]

    @property
    def shape(self) -> tuple[int, ...]:
        """Every image's channel-first map shape, ``(S, D, h, w)`` or ``(D, h, w)``."""
        return tuple(self.meta["shape"])

    def _pixel_major(self, view: int) -> np.ndarray:
        """Image ``view``'s map ``[h, w, *C]``: a fresh read-only memory map (unmapped when dropped)."""
        if self._arrays is not None:
            return self._arrays[view]
        return load_map(self.paths[view], self.shape, mmap=True)

    def sample(self, view: int, u: np.ndarray, v: np.ndarray) -> "torch.Tensor":
        """Bilinear features of image ``view`` at [n] normalised coordinates u = x / W, v = y / H of the
        image (pixel centres at (i + 0.5) / W), renormalised: -> [n, S, D] (or [n, D]) float32.

        Cell j of a map with w cells is centred at u = (j + 0.5) / w; positions beyond the outer cell
        centres take the border cells."""
        import torch

        h, w = self.shape[-2:]
        x = np.clip(np.asarray(u, dtype=np.float64) * w - 0.5, 0, w - 1)
        y = np.clip(np.asarray(v, dtype=np.float64) * h - 0.5, 0, h - 1)
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
        rows = np.concatenate([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
        picked = self._pixel_major(view).reshape(h * w, -1)[rows]          # [4n, S * D], the map unmapped after
        corners = torch.from_numpy(picked.astype(np.float32)).view(4, len(x), *self.shape[:-2])
        shape = (-1,) + (1,) * (len(self.shape) - 2)
        fx = torch.from_numpy(x - x0).float().view(shape)
        fy = torch.from_numpy(y - y0).float().view(shape)
        out = (1 - fy) * ((1 - fx) * corners[0] + fx * corners[1]) + fy * ((1 - fx) * corners[2] + fx * corners[3])
        return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def dense(self, view: int) -> "torch.Tensor":
        """Image ``view``'s whole map as a float32 channel-first tensor (``[S, D, h, w]`` or ``[D, h, w]``)."""
        import torch

        array = (channel_first(self._arrays[view]) if self._arrays is not None
                 else read_array(self.paths[view], self.shape))
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def block(self, view: int, top: int, left: int, size: int) -> "torch.Tensor":
        """The ``size`` x ``size`` window of image ``view``'s map at cell (top, left), pixel-major
        ``[size, size, *C]`` float32."""
        import torch

        window = self._pixel_major(view)[top:top + size, left:left + size]
        return torch.from_numpy(np.array(window, dtype=np.float32))
