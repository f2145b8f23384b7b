"""Feature extraction for a scene: CLIP patch hierarchy and DINO maps into the feature cache.

Feature resolution (``ResolutionConfig``): the authors cut CLIP crops from the photos at 1/8 of
their 4032-pixel width (504 x 378). Our scenes are usually stored already small (fern_504 is
504 x 378), so the default ("auto") uses the stored image size when its width is at most 640 pixels
and the stored size // 8 otherwise; ``--resolution.width/height`` or ``--resolution.downsample``
(relative to the stored images) override it. Images are resized with PIL bicubic, as the authors do.

Storage (``store_stride``, default 2): the hierarchy is computed at the feature resolution and stored
at every ``store_stride``-th pixel (area mean over store_stride^2 blocks, then L2-normalised per scale
and cell); readers sample it bilinearly at any pixel coordinate (``cache.FeatureMaps.sample``). The
per-pixel map is piecewise constant over cells of the crop stride (>= 9 px at 504 x 378), so a 2x
coarser grid loses little and stores 4x less; ``store_stride = 1`` keeps every pixel.

DINO runs on the whole image at the feature resolution rounded down to a multiple of its stride
(8): ``[D, h / 8, w / 8]`` per image, L2-normalised per cell.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ovs3d.errors import InputError
from ovs3d.features import cache
from ovs3d.features.encoders import ClipConfig, DenseFeatureExtractor, DinoConfig, ImageTextEncoder, dino_stride
from ovs3d.features.hub import check_weights_file
from ovs3d.features.registry import build_dense_extractor, build_image_text_encoder, clip_identity, dino_identity
from ovs3d.features.pyramid import PyramidConfig, extract_hierarchy, patch_sides
from ovs3d.io.images import image_size, list_images, read_rgb
from ovs3d.io.lock import folder_lock

FORMAT_VERSION = 1


@dataclass
class ResolutionConfig:
    """Resolution at which CLIP crops are cut (the feature resolution)."""

    width: int = 0
    """Feature width in pixels (0: from height / downsample / auto); alone, keeps the aspect ratio."""
    height: int = 0
    """Feature height in pixels (0: from width / downsample / auto); alone, keeps the aspect ratio."""
    downsample: float = 0.0
    """Stored image size divided by this (0: auto = stored size if width <= 640, else stored size // 8)."""


@dataclass
class ExtractConfig:
    """What to extract and how."""

    clip: ClipConfig = field(default_factory=ClipConfig)
    dino: DinoConfig = field(default_factory=DinoConfig)
    pyramid: PyramidConfig = field(default_factory=PyramidConfig)
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    store_stride: int = 2
    """CLIP maps are stored at every n-th pixel (area mean) and sampled bilinearly; 1 keeps every pixel."""
    skip_dino: bool = False
    """Extract only the CLIP hierarchy."""


def feature_size(stored: tuple[int, int], config: ResolutionConfig) -> tuple[int, int]:
    """(width, height) of the feature resolution for stored images of size ``stored`` = (W, H)."""
    w, h = stored
    if config.width > 0 and config.height > 0:
        size = (config.width, config.height)
    elif config.width > 0:
        size = (config.width, round(h * config.width / w))
    elif config.height > 0:
        size = (round(w * config.height / h), config.height)
    elif config.downsample > 0:
        size = (int(w / config.downsample), int(h / config.downsample))
    else:
        size = (w, h) if w <= 640 else (w // 8, h // 8)
    if min(size) < 16:
        raise InputError(None, f"the feature resolution {size[0]}x{size[1]} is too small (stored images are {w}x{h})",
                         "use a larger --resolution.width/--resolution.height or a smaller --resolution.downsample")
    return size


def scene_images(scene_root: str | Path) -> list[Path]:
    """The scene's images in index order (``images/`` sorted by name), checked to share one size."""
    paths = list_images(Path(scene_root) / "images")
    first = image_size(paths[0])
    for path in paths[1:]:
        if image_size(path) != first:
            raise InputError(path, f"image size {image_size(path)} differs from {paths[0].name}'s {first}",
                             "resize all images of a scene to one size")
    return paths


def load_image(path: Path, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """[3, h, w] float32 RGB in [0, 1] at ``size`` = (w, h), PIL bicubic resize (the authors' filter)."""
    rgb = read_rgb(path, size, resample=Image.Resampling.BICUBIC)
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous().to(device)


def normalize(x: torch.Tensor, dim: int) -> torch.Tensor:
    """L2-normalise along ``dim`` (zero vectors stay zero)."""
    return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)


def store_grid(hierarchy: torch.Tensor, stride: int) -> torch.Tensor:
    """[S, D, h, w] -> [S, D, ceil(h / stride), ceil(w / stride)] area means, L2-normalised along D."""
    if stride > 1:
        hierarchy = F.avg_pool2d(hierarchy, stride, ceil_mode=True)
    return normalize(hierarchy, dim=1)


def clip_source(scene_root: Path, config: ExtractConfig, paths: list[Path]) -> tuple[Path, dict]:
    """(cache folder, source = {"key", "images"}) of the CLIP hierarchy for this scene and config."""
    w, h = feature_size(image_size(paths[0]), config.resolution)
    pyramid = asdict(config.pyramid)
    pyramid.pop("batch_size")
    pyramid["divisors"] = list(pyramid["divisors"])
    key = {"format": "clip-hierarchy", "version": FORMAT_VERSION, "clip": clip_identity(config.clip),
           "pyramid": pyramid, "resolution": [w, h], "store_stride": config.store_stride}
    label = f"{config.clip.kind}-{config.clip.model}" if config.clip.kind != "builtin" else "builtin"
    return cache.cache_folder(scene_root, "clip", label, key), {"key": key, "images": cache.image_records(paths)}


def clip_meta(source: dict, config: ExtractConfig, encoder: ImageTextEncoder) -> dict:
    """The full meta.json of a CLIP hierarchy cache: source + encoder name, patch sides, shape, layout."""
    w, h = source["key"]["resolution"]
    sides = patch_sides(w, h, config.pyramid.divisors)
    s = config.store_stride
    return {**source, "encoder": encoder.name, "precision": encoder.precision,
            "patch_sides": sides,
            "strides": [max(1, p // config.pyramid.stride_divisor) for p in sides],
            "shape": [len(sides), encoder.embedding_dim, -(-h // s), -(-w // s)], "dtype": "float16",
            "layout": "[scale, D, h, w] (on disk pixel-major [h, w, scale, D]), L2-normalised along D; "
                      "scale 0 = largest patches"}


def dino_source(scene_root: Path, config: ExtractConfig, paths: list[Path]) -> tuple[Path, dict]:
    """(cache folder, source) of the DINO maps; the input is the feature resolution floored to ``stride``."""
    w, h = feature_size(image_size(paths[0]), config.resolution)
    stride = dino_stride(config.dino)
    key = {"format": "dino-map", "version": FORMAT_VERSION, "dino": dino_identity(config.dino),
           "input_size": [w // stride * stride, h // stride * stride]}
    label = f"{config.dino.kind}-{config.dino.model}" if config.dino.kind != "builtin" else "builtin"
    return cache.cache_folder(scene_root, "dino", label, key), {"key": key, "images": cache.image_records(paths)}


def dino_meta(source: dict, extractor: DenseFeatureExtractor) -> dict:
    w8, h8 = source["key"]["input_size"]
    return {**source, "encoder": extractor.name, "precision": extractor.precision,
            "stride": extractor.stride,
            "shape": [extractor.feature_dim, h8 // extractor.stride, w8 // extractor.stride],
            "dtype": "float16", "layout": "[D, h, w] (on disk pixel-major [h, w, D]), L2-normalised along D"}


Progress = Callable[[int, int, bool], None]


def extract_clip(scene_root: str | Path, config: ExtractConfig, encoder: ImageTextEncoder | None = None,
                 progress: Progress | None = None, device: torch.device | str = "cpu") -> Path:
    """Fill (or reuse) the CLIP hierarchy cache of the scene (the encoder built on ``device`` unless
    given); returns its folder."""
    scene_root = Path(scene_root)
    paths = scene_images(scene_root)
    size = feature_size(image_size(paths[0]), config.resolution)
    check_weights_file(config.clip.weights, "--extract.clip.weights")
    folder, source = clip_source(scene_root, config, paths)
    if cache.is_complete(folder, source):
        return folder
    encoder = encoder or build_image_text_encoder(config.clip, torch.device(device))
    meta = clip_meta(source, config, encoder)

    def compute(index: int) -> np.ndarray:
        image = load_image(paths[index], size, encoder.device)
        hierarchy = extract_hierarchy(image, encoder, config.pyramid, image_index=index)
        return store_grid(hierarchy, config.store_stride).cpu().numpy()

    with folder_lock(folder, "feature extraction"):
        return cache.fill_cache(folder, meta, paths, tuple(meta["shape"]), compute, progress)


def extract_dino(scene_root: str | Path, config: ExtractConfig, extractor: DenseFeatureExtractor | None = None,
                 progress: Progress | None = None, device: torch.device | str = "cpu") -> Path:
    """Fill (or reuse) the DINO map cache of the scene (the extractor built on ``device`` unless given);
    returns its folder."""
    scene_root = Path(scene_root)
    paths = scene_images(scene_root)
    check_weights_file(config.dino.weights, "--extract.dino.weights")
    folder, source = dino_source(scene_root, config, paths)
    if cache.is_complete(folder, source):
        return folder
    extractor = extractor or build_dense_extractor(config.dino, torch.device(device))
    meta = dino_meta(source, extractor)
    size = tuple(source["key"]["input_size"])

    def compute(index: int) -> np.ndarray:
        image = load_image(paths[index], size, extractor.device)
        with torch.no_grad():
            return normalize(extractor.extract(image[None]).float(), dim=1)[0].cpu().numpy()

    with folder_lock(folder, "feature extraction"):
        return cache.fill_cache(folder, meta, paths, tuple(meta["shape"]), compute, progress)


def view_hierarchy(scene_root: str | Path, config: ExtractConfig, view: int, encoder: ImageTextEncoder) -> torch.Tensor:
    """The stored CLIP hierarchy [S, D, h', w'] (float32, normalised) of one image: read from the cache
    when present there, else computed for this image only and saved into the cache (so a later
    ``extract`` reuses it)."""
    scene_root = Path(scene_root)
    paths = scene_images(scene_root)
    if not 0 <= view < len(paths):
        raise InputError(scene_root / "images", f"view {view} does not exist (the scene has {len(paths)} images)",
                         f"pass --view between 0 and {len(paths) - 1}")
    folder, source = clip_source(scene_root, config, paths)
    meta = clip_meta(source, config, encoder)
    target = cache.feature_path(folder, paths[view])
    if not (cache.prepare_folder(folder, meta) and cache.header_matches(target, tuple(meta["shape"]))):
        size = tuple(source["key"]["resolution"])
        image = load_image(paths[view], size, encoder.device)
        hierarchy = extract_hierarchy(image, encoder, config.pyramid, image_index=view)
        cache.save_array(target, store_grid(hierarchy, config.store_stride).cpu().numpy())
    return torch.from_numpy(cache.read_array(target).astype(np.float32))


def extract_features(scene_root: str | Path, config: ExtractConfig, log: Callable[[str], None] = print,
                     device: torch.device | str = "cpu") -> dict:
    """Fill the CLIP (and, unless ``skip_dino``, DINO) caches of a scene, logging progress; returns
    {"clip": folder, "dino": folder or None}."""
    import time

    start = time.perf_counter()

    def progress(index: int, total: int, reused: bool) -> None:
        state = "cached" if reused else f"done ({time.perf_counter() - start:.1f} s so far)"
        log(f"  image {index + 1}/{total}: {state}")

    extractor = None
    if not config.skip_dino:  # fail on missing DINO weights now, not after hours of CLIP extraction
        check_weights_file(config.dino.weights, "--extract.dino.weights")
        folder, source = dino_source(Path(scene_root), config, scene_images(scene_root))
        if not cache.is_complete(folder, source):
            extractor = build_dense_extractor(config.dino, torch.device(device))
    log(f"CLIP hierarchy ({config.clip.kind}) of {scene_root}")
    clip_folder = extract_clip(scene_root, config, progress=progress, device=device)
    log(f"  -> {clip_folder} [{cache.read_meta(clip_folder)['encoder']}]")
    dino_folder = None
    if not config.skip_dino:
        start = time.perf_counter()
        log(f"DINO maps ({config.dino.kind}) of {scene_root}")
        dino_folder = extract_dino(scene_root, config, extractor, progress=progress, device=device)
        log(f"  -> {dino_folder} [{cache.read_meta(dino_folder)['encoder']}]")
    return {"clip": clip_folder, "dino": dino_folder}
