"""Checks made before any long work starts, so that a bad input fails in seconds, not after the
extraction or stage 1 (each raises ``InputError(path, problem, fix)``):

* ``writable_folder``: a folder that will be written can be created and written to, and its disk has
  the free space the outputs need (an estimate, with a margin);
* ``feature_cache_bytes``: that estimate for a scene's CLIP and DINO caches (float16, pixel-major);
* ``classes_match_masks``: the class list given for a scene with ground truth is the annotated one;
* ``embed_prompts``: every prompt goes through the chosen CLIP encoder's tokenizer (its context length,
  77 tokens for CLIP) now, returning the unit text embeddings the stages use.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from ovs3d.errors import InputError
from ovs3d.features.encoders import ImageTextEncoder
from ovs3d.features.extract import ExtractConfig, feature_size
from ovs3d.features.relevancy import text_embeddings
from ovs3d.io.images import image_size, list_images
from ovs3d.scene.scene import Scene

MARGIN = 1.2
RUN_BYTES = 200 * 2 ** 20
"""A stage's run folder (checkpoint, renders, videos) needs at most this much at the cpu/test presets."""


def writable_folder(folder: str | Path, need_bytes: int = 0, what: str = "--out") -> Path:
    """``folder`` (created when missing) after checking it is a writable folder with ``need_bytes`` x 1.2 free."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, f"{what} is an existing file, not a folder", f"pass a folder path to {what}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ovs3d-write-check-"):
            pass
    except OSError as exc:
        raise InputError(folder, f"{what} cannot be written ({exc.strerror or exc})",
                         f"pass a writable folder to {what}, or fix its permissions") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes * MARGIN:
        raise InputError(folder, f"the disk has {free / 2 ** 30:.2f} GiB free; the outputs need about "
                         f"{need_bytes * MARGIN / 2 ** 30:.2f} GiB", f"free disk space, or pass another {what}")
    return folder


def feature_cache_bytes(scene_root: str | Path, config: ExtractConfig, n_scales: int = 3, clip_dim: int = 512,
                        dino_dim: int = 768) -> int:
    """Bytes of the scene's feature caches: per image, float16 CLIP maps [S, D, h / stride, w / stride]
    at the feature resolution (w, h), plus DINO maps [E, h / 8, w / 8] unless ``skip_dino``."""
    paths = list_images(Path(scene_root) / "images")
    w, h = feature_size(image_size(paths[0]), config.resolution)
    stride = config.store_stride
    per_image = n_scales * clip_dim * -(-h // stride) * -(-w // stride) * 2
    if not config.skip_dino:
        per_image += dino_dim * (h // 8) * (w // 8) * 2
    return per_image * len(paths)


def classes_match_masks(scene: Scene, classes: list[str], source: str = "--classes-file") -> None:
    """With ground truth, the class list must be the annotated one (the test stage scores against it)."""
    ann = scene.annotations
    if ann is not None and list(classes) != list(ann.classes):
        raise InputError(scene.root / "segmentations" / "classes.txt",
                         f"the classes given with {source} {list(classes)} differ from the annotated classes "
                         f"{list(ann.classes)}", f"pass the annotated class list (or no {source})")


def embed_prompts(encoder: ImageTextEncoder, classes: list[str]) -> torch.Tensor:
    """[C, D] unit text embeddings; a prompt the encoder cannot take (too long, empty) fails here."""
    return text_embeddings(encoder, classes).cpu()

