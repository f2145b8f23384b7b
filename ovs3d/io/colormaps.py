"""Class colours, label overlays and the legend image (method spec section 7.3).

The palette has 72 colours, cycled by class index. Its first 20 are Sasha Trubetskoy's "20 simple,
distinct colours" (red #e6194B, green #3cb44b, yellow #ffe119, blue #4363d8, ...) without white and
black (black marks label boundaries). Colours 21-72 extend them deterministically: pass r = 1, 2, 3
over the 20 base colours mixes each with black (r = 1: 50 %), with white (r = 2: 50 %) and with
black (r = 3: 25 %), and the palette is cut at 72.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

TRUBETSKOY_20 = (
    "#e6194B", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
    "#fabed4", "#469990", "#dcbeff", "#9A6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1",
    "#000075", "#a9a9a9",
)
PALETTE_SIZE = 72
_EXTENSION_MIX = ((0.5, 0.0), (0.5, 255.0), (0.25, 0.0))  # (fraction of the target, target grey level)


def hex_to_rgb(code: str) -> tuple[int, int, int]:
    code = code.lstrip("#")
    return int(code[0:2], 16), int(code[2:4], 16), int(code[4:6], 16)


def build_palette() -> np.ndarray:
    """[72, 3] uint8 class colours (see the module docstring for the rule)."""
    base = np.array([hex_to_rgb(c) for c in TRUBETSKOY_20], dtype=np.float64)
    rows = [base]
    for fraction, target in _EXTENSION_MIX:
        rows.append((1 - fraction) * base + fraction * target)
    return np.rint(np.concatenate(rows)[:PALETTE_SIZE]).astype(np.uint8)


PALETTE = build_palette()


def class_colors(n_classes: int) -> np.ndarray:
    """[n_classes, 3] uint8 colours, cycling the palette by class index."""
    return PALETTE[np.arange(n_classes) % PALETTE_SIZE]


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """[H, W] bool: pixels whose label differs from the right or lower neighbour."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return edge


def overlay(labels: np.ndarray, rgb: np.ndarray, n_classes: int, alpha: float = 0.65) -> np.ndarray:
    """0.65 class colour + 0.35 RGB with label boundaries painted black.

    labels [H, W] int, rgb [H, W, 3] float in [0, 1] -> [H, W, 3] uint8.
    """
    colors = class_colors(n_classes).astype(np.float32) / 255.0
    mixed = alpha * colors[labels] + (1.0 - alpha) * np.clip(rgb, 0.0, 1.0)
    mixed[label_boundaries(labels)] = 0.0
    return (mixed * 255.0 + 0.5).astype(np.uint8)


def legend(classes: list[str], block: int = 64, text_width: int = 320) -> np.ndarray:
    """Legend image [C * block, block + text_width, 3] uint8: one colour block per class, stacked
    vertically in class order, with the class name to its right."""
    colors = class_colors(len(classes))
    image = Image.new("RGB", (block + text_width, block * len(classes)), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for c, name in enumerate(classes):
        draw.rectangle([0, c * block, block - 1, (c + 1) * block - 1], fill=tuple(int(x) for x in colors[c]))
        draw.text((block + 8, c * block + block // 2 - 6), name, fill=(0, 0, 0))
    return np.asarray(image)


HEATMAP_ANCHORS = np.array([[0.19, 0.07, 0.23], [0.12, 0.45, 0.85], [0.10, 0.80, 0.75], [0.55, 0.95, 0.25],
                            [0.98, 0.78, 0.15], [0.85, 0.20, 0.07]])
"""Heat-map anchor colours for 0, 0.2, ..., 1: dark violet, blue, cyan, green, yellow, red."""


def heatmap(values: np.ndarray) -> np.ndarray:
    """Scalar map [..., H, W] in [0, 1] -> [..., H, W, 3] uint8, piecewise-linear between the anchors."""
    x = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0) * (len(HEATMAP_ANCHORS) - 1)
    low = np.minimum(np.floor(x).astype(np.int64), len(HEATMAP_ANCHORS) - 2)
    frac = (x - low)[..., None]
    rgb = (1.0 - frac) * HEATMAP_ANCHORS[low] + frac * HEATMAP_ANCHORS[low + 1]
    return (rgb * 255.0 + 0.5).astype(np.uint8)
