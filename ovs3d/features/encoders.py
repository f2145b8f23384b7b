"""Encoder protocols, their configs and the registry that builds them.

Two slots (method spec sections 4 and 5):

- the image-text slot (CLIP): ``encode_images([B, 3, H, W] in [0, 1]) -> [B, D]`` and
  ``encode_texts(list of C prompts) -> [C, D]``, both in one joint space where the cosine of an image
  and a text embedding scores how well the text describes the image;
- the dense slot (DINO): ``extract([B, 3, H, W] in [0, 1]) -> [B, D, H / stride, W / stride]``.

Backends: ``openclip`` / ``timm`` (the paper's networks; weights from the hub cache, a download, or a
local file) and ``builtin`` (weight-free colour/texture encoders, labelled "(not CLIP)" / "(not DINO)"
in their ``name`` and in every output made with them). Heavy libraries are imported lazily.

Offline rule: weights are looked up in the local hub cache first; a download is attempted only when
the hub answers within a few seconds. Otherwise ``WeightsUnavailableError`` names the model and the
``--clip.weights`` / ``--dino.weights`` option, immediately (no minute of silent retries).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from urllib.parse import urlparse

import torch

from ovs3d.errors import InputError


@runtime_checkable
class ImageTextEncoder(Protocol):
    """Image and text embeddings in one joint space (CLIP's role)."""

    name: str
    """Human-readable identity written into every output, e.g. ``openclip ViT-B-16 (openai)``."""
    embedding_dim: int
    """D, the length of an embedding."""
    input_size: int
    """Side of the square image the encoder works at; callers may pre-resize crops to it."""
    batch_size: int
    """Crops per forward pass that run fastest on the encoder's device (the pyramid's default)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float RGB in [0, 1] -> [B, D] float32 embeddings (not normalised)."""
        ...

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        """C prompts -> [C, D] float32 embeddings (not normalised)."""
        ...


@runtime_checkable
class DenseFeatureExtractor(Protocol):
    """Per-patch image features (DINO's role): similar patches have a high cosine."""

    name: str
    device: torch.device
    feature_dim: int
    """D, the length of a patch feature."""
    stride: int
    """Pixels per feature cell; input sides must be multiples of it."""

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float RGB in [0, 1], H and W multiples of ``stride`` -> [B, D, H/stride, W/stride]."""
        ...


Precision = Literal["auto", "fp32", "fp16", "bf16"]


@dataclass
class ClipConfig:
    """The image-text encoder (CLIP slot)."""

    kind: Literal["openclip", "builtin"] = "openclip"
    """openclip: the paper's CLIP through open_clip; builtin: weight-free colour/material words (not CLIP)."""
    model: str = "ViT-B-16"
    """open_clip architecture name (paper: ViT-B-16)."""
    pretrained: str = "openai"
    """open_clip weights tag (paper: openai). With --clip.weights it still selects the preprocessing and QuickGELU."""
    weights: Path | None = None
    """Local weights file (safetensors, .pt/.pth/.bin state dict or OpenAI TorchScript); skips the hub."""
    precision: Precision = "auto"
    """Compute precision; auto = fp16 on CUDA (as the authors), fp32 elsewhere."""


@dataclass
class DinoConfig:
    """The dense feature extractor (DINO slot)."""

    kind: Literal["timm", "builtin"] = "timm"
    """timm: the paper's DINO ViT-B/8 through timm; builtin: weight-free colour-texture statistics (not DINO)."""
    model: str = "vit_base_patch8_224.dino"
    """timm model name with its weights tag (paper: vit_base_patch8_224.dino)."""
    weights: Path | None = None
    """Local weights file (safetensors or .pth/.bin state dict); skips the hub."""
    precision: Precision = "auto"
    """Compute precision; auto = fp16 on CUDA, fp32 elsewhere."""


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype:
    """The compute dtype: ``auto`` is fp16 on CUDA and fp32 elsewhere."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


def weights_identity(path: Path | None) -> dict | None:
    """What identifies a local weights file in cache metadata: resolved path, size and mtime."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat()
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def clip_identity(config: ClipConfig) -> dict:
    """The fields of a CLIP config that change its embeddings (for cache keys)."""
    if config.kind == "builtin":
        from ovs3d.features.builtin import ColorWordEncoder

        return {"kind": "builtin", "name": ColorWordEncoder.name, "version": ColorWordEncoder.version}
    return {"kind": config.kind, "model": config.model, "pretrained": config.pretrained,
            "weights": weights_identity(config.weights), "precision": config.precision}


def dino_identity(config: DinoConfig) -> dict:
    """The fields of a DINO config that change its features (for cache keys)."""
    if config.kind == "builtin":
        from ovs3d.features.builtin import ColorTextureExtractor

        return {"kind": "builtin", "name": ColorTextureExtractor.name, "version": ColorTextureExtractor.version}
    return {"kind": config.kind, "model": config.model, "weights": weights_identity(config.weights),
            "precision": config.precision}


def dino_stride(config: DinoConfig) -> int:
    """Pixels per feature cell of the DINO slot: 8 for builtin, the ViT patch size (``patch<N>`` in the
    timm name) otherwise."""
    if config.kind == "builtin":
        return 8
    import re

    found = re.search(r"patch(\d+)", config.model)
    return int(found.group(1)) if found else 16


def check_weights_file(path: Path | None, option: str) -> None:
    """Fail before any work when a given weights file does not exist."""
    if path is not None and not Path(path).is_file():
        raise InputError(path, "the weights file does not exist", f"pass an existing file to {option}, or omit it")


def build_image_text_encoder(config: ClipConfig, device: torch.device) -> ImageTextEncoder:
    """The image-text encoder of ``config`` on ``device``."""
    if config.kind == "builtin":
        from ovs3d.features.builtin import ColorWordEncoder

        return ColorWordEncoder(device=device)
    check_weights_file(config.weights, "--clip.weights")
    from ovs3d.features.openclip import OpenClipEncoder

    return OpenClipEncoder(config, device)


def build_dense_extractor(config: DinoConfig, device: torch.device) -> DenseFeatureExtractor:
    """The dense feature extractor of ``config`` on ``device``."""
    if config.kind == "builtin":
        from ovs3d.features.builtin import ColorTextureExtractor

        return ColorTextureExtractor(device=device)
    check_weights_file(config.weights, "--dino.weights")
    from ovs3d.features.dino import TimmDinoExtractor

    return TimmDinoExtractor(config, device)


def hub_reachable(url: str | None = None, timeout_s: float = 3.0) -> bool:
    """Whether the model hub (``HF_ENDPOINT`` or huggingface.co, or ``url``'s host) accepts a TCP
    connection within ``timeout_s``; False at once when ``HF_HUB_OFFLINE`` is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    target = urlparse(url or os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def cached_hub_file(repo_id: str, filenames: list[str]) -> Path | None:
    """The first of ``filenames`` already in the local Hugging Face cache for ``repo_id``, else None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None
