"""The CLIP patch hierarchy (method spec section 4), with square crops, seeded jitter and batching.

For an image of h x w pixels (the feature resolution) and m = min(h, w), scale s has the patch side
p_s = floor(m / d_s) with d = (5, 7, 10) (scale 0 is the coarsest) and the stride q_s = floor(p_s / 4).
Crop starts along an axis of length L are r * q for r = 0 .. R - 1 with
R = floor((L - p) / q) + 1 + [(L - p) mod q != 0], as the authors have it.

Squares (the authors' weak point 13): the authors clip the last row/column of crops at the border and
jitter each side independently, so their crops are rectangles between p and 1.5 p wide while CLIP only
sees the centred square. Here every crop is a square that lies fully inside the image:
- the last start is clamped to L - p (the crop is shifted inward instead of cut);
- jitter (seeded, optional) grows the side to p + u with u uniform in {0 .. floor(p / 4)} and moves the
  corner up/left by a, b uniform in {0 .. u}; the square is then shifted inward to fit the image.
  It still contains the un-jittered p x p crop, so every pixel stays covered.
CLIP therefore sees exactly the pixels its embedding is credited to.

F_s(x) = (sum over crops k of scale s containing x of e_k) / #{such crops}: computed in O(D h w) per
scale with a summed-area table (each crop adds +e, -e, -e, +e at its four corners of a
(h + 1) x (w + 1) difference image; two cumulative sums give the per-pixel sums).

Crops are cut from the image tensor (on the encoder's device), resized to the encoder's input size
(bicubic, antialiased; one call per crop side in a batch, no per-crop PIL) and encoded ``batch_size`` at a
time. Crops that coincide after the border clamping (same corner and side; jitter makes a few near
the borders) are encoded once and their embedding credited to each of them, so the averages are those
of every crop; the distinct crops are ordered by side, so a batch holds few distinct sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ovs3d.features.encoders import ImageTextEncoder


@dataclass
class PyramidConfig:
    """CLIP patch hierarchy settings (paper values by default)."""

    divisors: tuple[int, ...] = (5, 7, 10)
    """Patch side = short side // divisor, one scale per divisor, coarsest first (paper: 5 7 10)."""
    stride_divisor: int = 4
    """Crop stride = patch side // this (paper: 4)."""
    jitter: bool = True
    """Seeded jitter of crop size and position (the paper jitters, unseeded); False: a plain grid."""
    seed: int = 0
    """Seed of the jitter; image i uses the stream (seed, i), so results do not depend on the order."""
    batch_size: int = 0
    """Crops per encoder forward pass (0: the encoder's own ``batch_size``; on a CPU calibrated on first use)."""


def patch_sides(width: int, height: int, divisors: tuple[int, ...]) -> list[int]:
    """Patch side per scale: min(h, w) // d (at least 1)."""
    return [max(1, min(width, height) // d) for d in divisors]


def grid_starts(length: int, side: int, stride: int) -> np.ndarray:
    """Crop starts along one axis: r * stride for r < R (R as in the module doc), the last clamped to
    length - side so that every crop lies inside [0, length)."""
    span = length - side
    count = span // stride + 1 + int(span % stride != 0)
    return np.minimum(np.arange(count) * stride, span)


def crop_boxes(width: int, height: int, config: PyramidConfig, image_index: int = 0) -> list[torch.Tensor]:
    """Square crops per scale: a list of [n_s, 3] int64 tensors (x0, y0, side), all inside the image."""
    rng = np.random.default_rng([config.seed, image_index])
    boxes = []
    for side in patch_sides(width, height, config.divisors):
        stride = max(1, side // config.stride_divisor)
        ys, xs = np.meshgrid(grid_starts(height, side, stride), grid_starts(width, side, stride), indexing="ij")
        x0, y0 = xs.ravel(), ys.ravel()
        sides = np.full_like(x0, side)
        if config.jitter:
            grow = rng.integers(0, side // 4 + 1, size=x0.shape)
            sides = np.minimum(side + grow, min(width, height))
            x0 = x0 - rng.integers(0, sides - side + 1)
            y0 = y0 - rng.integers(0, sides - side + 1)
            x0 = np.clip(x0, 0, width - sides)
            y0 = np.clip(y0, 0, height - sides)
        boxes.append(torch.from_numpy(np.stack([x0, y0, sides], axis=1).astype(np.int64)))
    return boxes


def cut_crops(image: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Cut square crops from ``image`` [3, H, W] and resize them to ``size``: -> [n, 3, size, size].

    ``boxes`` [n, 3] (x0, y0, side); crops of equal side are gathered together by advanced indexing and
    resized with bicubic antialiased interpolation (values clamped back to [0, 1])."""
    out = torch.empty((len(boxes), image.shape[0], size, size), dtype=image.dtype, device=image.device)
    boxes_dev = boxes.to(image.device)
    for side in torch.unique(boxes[:, 2]).tolist():
        members = (boxes[:, 2] == side).nonzero().squeeze(1)
        sel = boxes_dev[members.to(image.device)]
        offsets = torch.arange(side, device=image.device)
        rows = (sel[:, 1:2] + offsets)[:, :, None]  # [m, side, 1]
        cols = (sel[:, 0:1] + offsets)[:, None, :]  # [m, 1, side]
        crops = image[:, rows, cols].permute(1, 0, 2, 3)  # [m, 3, side, side]
        if side != size:
            crops = F.interpolate(crops, size=(size, size), mode="bicubic", align_corners=False,
                                  antialias=True).clamp_(0, 1)
        out[members.to(image.device)] = crops
    return out


@torch.no_grad()
def encode_boxes(image: torch.Tensor, boxes: torch.Tensor, encoder: ImageTextEncoder, batch_size: int) -> torch.Tensor:
    """Embeddings [n, D] float32 of the crops ``boxes`` [n, 3] of ``image`` [3, H, W], ``batch_size`` per pass."""
    chunks = []
    for start in range(0, len(boxes), batch_size):
        crops = cut_crops(image, boxes[start:start + batch_size], encoder.input_size)
        chunks.append(encoder.encode_images(crops).float())
    return torch.cat(chunks) if chunks else torch.zeros((0, encoder.embedding_dim), device=image.device)


def distinct_crops(boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct rows of ``boxes`` [n, 3] ordered by side, [u, 3], and for each box the index of its
    row, [n] (``distinct[index] == boxes``)."""
    distinct, index = torch.unique(boxes, dim=0, return_inverse=True)
    order = torch.argsort(distinct[:, 2], stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    return distinct[order], rank[index]


def average_into_pixels(boxes: torch.Tensor, embeddings: torch.Tensor, height: int, width: int,
                        channel_chunk: int = 64) -> torch.Tensor:
    """Per-pixel mean of the embeddings of the crops containing each pixel: [D, height, width] float32.

    ``boxes`` [n, 3] (x0, y0, side), ``embeddings`` [n, D]. Summed-area table over a (h + 1) x (w + 1)
    difference image, accumulated in float64 (float32 on MPS), ``channel_chunk`` channels at a time.
    Pixels covered by no crop get 0."""
    device = embeddings.device
    acc = torch.float32 if device.type == "mps" else torch.float64
    b = boxes.to(device)
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2], y0 + b[:, 2]
    stride = width + 1
    corners = torch.cat([y0 * stride + x0, y0 * stride + x1, y1 * stride + x0, y1 * stride + x1])
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=acc, device=device).repeat_interleave(len(b))

    def box_sums(values: torch.Tensor) -> torch.Tensor:  # values [c, n] -> [c, h, w]
        diff = torch.zeros((values.shape[0], (height + 1) * stride), dtype=acc, device=device)
        diff.index_add_(1, corners, values.to(acc).repeat(1, 4) * signs)
        return diff.view(-1, height + 1, stride).cumsum(1).cumsum(2)[:, :height, :width]

    counts = box_sums(torch.ones((1, len(b)), dtype=acc, device=device))[0]
    inverse = torch.where(counts > 0.5, 1.0 / counts.clamp_min(1.0), torch.zeros_like(counts))
    out = torch.empty((embeddings.shape[1], height, width), dtype=torch.float32, device=device)
    for start in range(0, embeddings.shape[1], channel_chunk):
        chunk = embeddings[:, start:start + channel_chunk].T  # [c, n]
        out[start:start + channel_chunk] = (box_sums(chunk) * inverse).float()
    return out


def extract_hierarchy(image: torch.Tensor, encoder: ImageTextEncoder, config: PyramidConfig,
                      image_index: int = 0) -> torch.Tensor:
    """The patch hierarchy of one image: [3, H, W] RGB in [0, 1] -> [S, D, H, W] float32 per-pixel mean
    crop embeddings (not normalised), S = len(config.divisors), on the image's device."""
    _, height, width = image.shape
    batch_size = config.batch_size or encoder.batch_size
    scales = []
    for boxes in crop_boxes(width, height, config, image_index):
        distinct, index = distinct_crops(boxes)
        embeddings = encode_boxes(image, distinct, encoder, batch_size)[index.to(image.device)]
        scales.append(average_into_pixels(boxes, embeddings, height, width))
    return torch.stack(scales)


def count_crops(width: int, height: int, config: PyramidConfig, image_index: int = 0) -> int:
    """Number of encoder inputs for one image (distinct crops)."""
    return sum(len(distinct_crops(b)[0]) for b in crop_boxes(width, height, config, image_index))
