"""The encoder registry: build the CLIP-slot and DINO-slot backends from their configs, and the
identities that key the feature caches."""

from __future__ import annotations

import torch

from ovs3d.features.builtin import ColorKernelExtractor, ColorWordEncoder
from ovs3d.features.dino import TimmDinoExtractor
from ovs3d.features.encoders import ClipConfig, DenseFeatureExtractor, DinoConfig, ImageTextEncoder
from ovs3d.features.hub import check_weights_file, weights_identity
from ovs3d.features.openclip import OpenClipEncoder


def clip_identity(config: ClipConfig) -> dict:
    """The fields of a CLIP config that change its embeddings (for cache keys)."""
    if config.kind == "builtin":
        return {"kind": "builtin", "name": ColorWordEncoder.name, "version": ColorWordEncoder.version}
    return {"kind": config.kind, "model": config.model, "pretrained": config.pretrained,
            "weights": weights_identity(config.weights), "precision": config.precision}


def dino_identity(config: DinoConfig) -> dict:
    """The fields of a DINO config that change its features (for cache keys)."""
    if config.kind == "builtin":
        return {"kind": "builtin", "name": ColorKernelExtractor.name, "version": ColorKernelExtractor.version}
    return {"kind": config.kind, "model": config.model, "weights": weights_identity(config.weights),
            "precision": config.precision}


def build_image_text_encoder(config: ClipConfig, device: torch.device) -> ImageTextEncoder:
    """The image-text encoder of ``config`` on ``device``."""
    if config.kind == "builtin":
        return ColorWordEncoder(device=device)
    check_weights_file(config.weights, "--extract.clip.weights")
    return OpenClipEncoder(config, device)


def build_dense_extractor(config: DinoConfig, device: torch.device) -> DenseFeatureExtractor:
    """The dense feature extractor of ``config`` on ``device``."""
    if config.kind == "builtin":
        return ColorKernelExtractor(device=device)
    check_weights_file(config.weights, "--extract.dino.weights")
    return TimmDinoExtractor(config, device)
