"""Encoder protocols and their configs (the registry that builds them is ``features/registry.py``).

Two slots (method spec sections 4 and 5):

- the image-text slot (CLIP): ``encode_images([B, 3, H, W] in [0, 1]) -> [B, D]`` and
  ``encode_texts(list of C prompts) -> [C, D]``, both in one joint space where the cosine of an image
  and a text embedding scores how well the text describes the image;
- the dense slot (DINO): ``extract([B, 3, H, W] in [0, 1]) -> [B, D, H / stride, W / stride]``.

Backends: ``openclip`` / ``timm`` (the paper's networks; weights from the hub cache, a download, or a
local file, ``features/hub.py``) and ``builtin`` (weight-free colour/texture encoders, labelled
"(not CLIP)" / "(not DINO)" in their ``name`` and in every output made with them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import torch


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
    precision: str
    """The compute precision it runs at (fp32, fp16, bf16 or int8; features/precision.py)."""

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
    precision: str
    """The compute precision it runs at (fp32, fp16, bf16 or int8; features/precision.py)."""

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] float RGB in [0, 1], H and W multiples of ``stride`` -> [B, D, H/stride, W/stride]."""
        ...


Precision = Literal["auto", "fp32", "fp16", "bf16", "int8"]


@dataclass
class ClipConfig:
    """The image-text encoder (CLIP slot)."""

    kind: Literal["openclip", "builtin"] = "openclip"
    """openclip: the paper's CLIP through open_clip; builtin: weight-free colour/material words (not CLIP)."""
    model: str = "ViT-B-16"
    """open_clip architecture name (paper: ViT-B-16)."""
    pretrained: str = "openai"
    """open_clip weights tag (paper: openai). With --extract.clip.weights it still selects the preprocessing and QuickGELU."""
    weights: Path | None = None
    """Local weights file (safetensors or a .pt/.pth/.bin state dict; TorchScript archives are refused); skips the hub."""
    precision: Precision = "auto"
    """Compute precision (features/precision.py); auto = fp16 on CUDA (as the authors), bf16 on a CPU with
    native bf16 (avx512_bf16 / amx_bf16), fp32 elsewhere; fp32 forces full precision; int8 = dynamic int8
    linear layers (CPU)."""


@dataclass
class DinoConfig:
    """The dense feature extractor (DINO slot)."""

    kind: Literal["timm", "builtin"] = "timm"
    """timm: the paper's DINO ViT-B/8 through timm; builtin: a weight-free colour kernel (not DINO)."""
    model: str = "vit_base_patch8_224.dino"
    """timm model name with its weights tag (paper: vit_base_patch8_224.dino)."""
    weights: Path | None = None
    """Local weights file (safetensors or .pth/.bin state dict); skips the hub."""
    precision: Precision = "auto"
    """Compute precision (features/precision.py); auto = fp16 on CUDA, fp32 elsewhere (bf16 is opt-in: DINO
    is about 1 % of an extraction); int8 = dynamic int8 linear layers (CPU)."""


def dino_stride(config: DinoConfig) -> int:
    """Pixels per feature cell of the DINO slot: 8 for builtin, the ViT patch size (``patch<N>`` in the
    timm name) otherwise."""
    if config.kind == "builtin":
        return 8
    found = re.search(r"patch(\d+)", config.model)
    return int(found.group(1)) if found else 16
