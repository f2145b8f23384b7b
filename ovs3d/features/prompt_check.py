"""Prompt debugging before training (the authors' ``test_prompt``, method spec section 7.4, without
its crash and ``exit()``): one view's min-max relevancy per scale and class, as images.

Writes into ``out``: ``<scale>_<class>.png`` (the authors' names; scale 0 = largest patches, class
index in class-list order), colour-mapped (dark violet = 0 ... red = 1), ``sheet.png`` (rows =
classes, columns = the view then scales 0..S-1, with the encoder's name on top) and ``index.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from ovs3d.features.registry import build_image_text_encoder
from ovs3d.features.extract import ExtractConfig, feature_size, load_image, scene_images, view_hierarchy
from ovs3d.features.pyramid import patch_sides
from ovs3d.features.relevancy import relevancy, text_embeddings
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.colormaps import heatmap
from ovs3d.io.images import image_size, to_uint8, write_png

LABEL_HEIGHT = 18


def labelled(tile: np.ndarray, text: str) -> np.ndarray:
    """Put a white strip with ``text`` above an [H, W, 3] uint8 tile."""
    canvas = Image.new("RGB", (tile.shape[1], tile.shape[0] + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(Image.fromarray(tile), (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 3), text[: max(8, tile.shape[1] // 6)], fill=(0, 0, 0))
    return np.asarray(canvas)


def relevancy_sheet(image: np.ndarray, maps: np.ndarray, classes: list[str], sides: list[int], title: str) -> np.ndarray:
    """[C * (H + label), (S + 1) * W, 3] uint8: per class, the view then its S relevancy maps."""
    rows = []
    for c, name in enumerate(classes):
        tiles = [labelled(to_uint8(image), name)]
        tiles += [labelled(heatmap(maps[s, c]), f"s{s}: {sides[s]} px") for s in range(len(sides))]
        rows.append(np.concatenate(tiles, axis=1))
    sheet = np.concatenate(rows, axis=0)
    return labelled(sheet, title)


def write_relevancy_view(scene_root: str | Path, config: ExtractConfig, view: int, classes: list[str],
                         out: str | Path, log=print, device: torch.device | str = "cpu") -> Path:
    """Compute (or read from the cache) view ``view``'s hierarchy and write its relevancy images to ``out``."""
    scene_root, out = Path(scene_root), Path(out)
    paths = scene_images(scene_root)
    encoder = build_image_text_encoder(config.clip, torch.device(device))
    text = text_embeddings(encoder, classes)  # bad prompts fail here, before the extraction
    unknown = getattr(encoder, "unknown_prompts", [])
    if unknown:
        log(f"warning: {encoder.name} knows no word of {unknown}: their maps mean nothing")
    features = view_hierarchy(scene_root, config, view, encoder)
    w, h = feature_size(image_size(paths[0]), config.resolution)
    rel = relevancy(features, text)  # [S, C, h', w']
    rel = F.interpolate(rel, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1).numpy()
    for s in range(rel.shape[0]):
        for c in range(rel.shape[1]):
            write_png(out / f"{s}_{c}.png", heatmap(rel[s, c]))
    image = load_image(paths[view], (w, h), torch.device("cpu")).permute(1, 2, 0).numpy()
    sides = patch_sides(w, h, config.pyramid.divisors)
    sheet = relevancy_sheet(image, rel, classes, sides, f"view {view} ({paths[view].name}), {encoder.name}")
    write_png(out / "sheet.png", sheet)
    write_json_atomic(out / "index.json", {
        "scene": str(scene_root), "view": view, "image": paths[view].name, "encoder": encoder.name,
        "classes": classes, "patch_sides": sides, "files": "<scale>_<class>.png; scale 0 = largest patches",
        "relevancy": "cosine(normalised pixel feature, normalised text embedding), min-max per (scale, class)"})
    log(f"relevancy maps of view {view} -> {out} (sheet.png) [{encoder.name}]")
    return out
