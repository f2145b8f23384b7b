"""``ovs3d query``: relevancy maps for any text from a trained stage-2 run (no retraining).

A view's rendered features are unit vectors F(x) in CLIP space; the relevancy of a text with unit
embedding t is r(x) = cos(F(x), t) = <F(x), t>, shown min-max normalised over the view. Rendering is
the costly part, so each view's features are rendered once and cached as float16 ``[H, W, 512]``
(``<out>/feature_cache/<view>.npy`` + ``cache.json`` naming the checkpoint iteration and size); every
further query is one [H W, 512] x [512] product.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from ovs3d.errors import InputError
from ovs3d.eval.segment_eval import scene_at_feature_resolution
from ovs3d.features.relevancy import text_embeddings
from ovs3d.io.atomic import atomic_path, write_json_atomic
from ovs3d.io.colormaps import heatmap
from ovs3d.io.images import write_png
from ovs3d.io.lock import folder_lock
from ovs3d.render.camera import radiance_field, render_camera
from ovs3d.runs.load import load_run, run_text_encoder


def slug(text: str) -> str:
    """A file-name stem for a query text: its letters and digits (at most 60) and 6 hex digits of its
    SHA-1, so two texts never share a file ("red ball" and "red-ball" differ)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "query"
    return f"{readable}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"


def heat_overlay(relevancy: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """0.5 RGB + 0.5 ``io.colormaps.heatmap`` colour of a [H, W] map in [0, 1] -> [H, W, 3] float."""
    return 0.5 * rgb + 0.5 * heatmap(relevancy).astype(np.float32) / 255.0


def cached_features(model, scene, view: int, step: float, cache_dir: Path, iteration: int) -> np.ndarray:
    """[H, W, 512] float16 unit features of ``view``: read from the cache, or rendered once and stored."""
    path = cache_dir / f"{view:03d}.npy"
    key = {"iteration": iteration, "size": [scene.width, scene.height]}
    info_path = cache_dir / "cache.json"
    try:
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    except (OSError, ValueError):
        info = {}                                   # a damaged cache index: render again
    if path.is_file() and info.get("key") == key:
        try:
            cached = np.load(path, mmap_mode="r")
            if cached.shape[:2] == (scene.height, scene.width):
                return cached
        except (OSError, ValueError):
            pass                                    # a damaged cached view: render it again
    if info.get("key") != key:
        for stale in cache_dir.glob("*.npy"):
            stale.unlink()
        write_json_atomic(info_path, {"key": key})
    cams = scene.cameras.to(next(model.parameters()).device)
    feats = render_camera(model, cams, view, step, ("features",), chunk=8192)["features"].half().cpu().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, feats)
    return np.load(path, mmap_mode="r")


def relevancy_map(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Min-max normalised cos(F, t): features [H, W, D] (unit), text [D] (unit) -> [H, W] in [0, 1]."""
    r = features @ text
    lo, hi = r.min(), r.max()
    return (r - lo) / (hi - lo).clamp(min=1e-12)


def run_query(run_dir: str | Path, texts: list[str], views: list[int] | None = None, out: str | Path | None = None,
              scene_root: str | Path | None = None, device: torch.device | str = "cpu", repeats: int = 20) -> dict:
    """Write ``<out>/<text>_<view>.png`` (grey relevancy) and ``..._overlay.png`` (heat map over the image)
    for every text and view,
    and ``<out>/query.json`` with the milliseconds per query on a cached view. Returns that dict."""
    texts = [t.strip() for t in texts]
    if not texts or not all(texts):
        raise InputError(None, "no query text (or an empty one)", 'pass --text "a red ball" (repeat --text for more)')
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "query"
    with folder_lock(out, "ovs3d query"):
        model, record = load_run(run_dir, device, stage="segment")
        encoder = run_text_encoder(record, device)
        text = text_embeddings(encoder, texts).cpu()
        scene = scene_at_feature_resolution(record, scene_root, annotations=False)
        views = views if views else [scene.train_views[0]]
        bad = [v for v in views if not 0 <= v < scene.n_images]
        if bad:
            raise InputError(scene.root / "images", f"view(s) {bad} do not exist (the scene has {scene.n_images} images)",
                             f"pass --view between 0 and {scene.n_images - 1}")
        cache_dir = run_dir / "feature_cache"
        timings = []
        with radiance_field(model).frozen():      # every view renders from the same lookup volumes
            for view in views:
                start = time.perf_counter()
                feats = cached_features(model, scene, view, record.step, cache_dir, record.iteration)
                render_s = time.perf_counter() - start
                f = torch.from_numpy(np.asarray(feats, dtype=np.float32))
                for q, prompt in enumerate(texts):
                    rel = relevancy_map(f, text[q]).numpy()
                    write_png(out / f"{slug(prompt)}_{view:03d}.png", rel)
                    write_png(out / f"{slug(prompt)}_{view:03d}_overlay.png", heat_overlay(rel, scene.images[view]))
                per_query = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    relevancy_map(f, text[0])
                    per_query.append((time.perf_counter() - t0) * 1000)
                timings.append({"view": view, "feature_render_or_load_s": render_s, "ms_per_query": float(np.median(per_query))})
        result = {"run": str(run_dir.resolve()), "texts": texts, "views": views, "encoder": record.encoders["clip"],
                  "builtin_encoders": record.builtin_encoders, "resolution": [scene.width, scene.height],
                  "timings": timings}
        write_json_atomic(out / "query.json", result)
        return result
