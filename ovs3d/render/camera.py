"""The one camera renderer: any model (a ``RadianceField`` or a ``SemanticModel``, ``field/base.py``) at
any camera (a dataset view, a spiral or orbit frame, a viewer's camera) to any of its outputs, in chunks
of rays, with the same empty-space skipping as training.

Outputs (each [H, W, ...] on the model's device):

    rgb [H, W, 3] in [0, 1] (black background)    depth [H, W]    acc [H, W]    (any model)
    features [H, W, D] unit CLIP-space features    selection [H, W, S]          (semantic models)
    cosines [C, H, W] = cos(F, t_c)                relevancy [C, H, W] in [0, 1]
    labels [H, W] long                                                           (semantic, with ``text``)

``relevancy`` is cos(F, t_c) min-max normalised per class over the view; ``labels`` the argmax of the
cosines or of the relevancies (``render/labels.py``, the ``label_rule``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as nnf

from ovs3d.field.base import RadianceField, SemanticModel
from ovs3d.render.labels import class_cosines, label_pixels, view_relevancy
from ovs3d.render.volume import march, render_rays
from ovs3d.scene.cameras import Cameras

RADIANCE_OUTPUTS = ("rgb", "depth", "acc")
SEMANTIC_OUTPUTS = ("features", "selection", "cosines", "relevancy", "labels")
TEXT_OUTPUTS = ("cosines", "relevancy", "labels")


def radiance_field(model) -> RadianceField:
    """The radiance field of ``model``: itself, or a semantic model's ``field``. Enter its ``frozen()``
    around a loop of renders so that they share its lookup volumes."""
    return model.field if isinstance(model, SemanticModel) else model


@torch.no_grad()
def render_camera(model, cameras: Cameras, view: int, step: float, outputs: tuple[str, ...] = RADIANCE_OUTPUTS,
                  chunk: int = 4096, text: torch.Tensor | None = None, label_rule: str = "cosine",
                  weight_threshold: float = 1e-4) -> dict[str, torch.Tensor]:
    """Render every pixel of ``cameras[view]`` (midpoint samples, marching ``step``).

    Args:
        model: a radiance field, or a semantic model (whose ``field`` places the samples).
        outputs: names from ``RADIANCE_OUTPUTS`` and ``SEMANTIC_OUTPUTS``.
        chunk: rays per chunk.
        text: [C, D] unit text embeddings, needed for cosines, relevancy and labels.
        weight_threshold: samples with a smaller weight w_i are not shaded (``march``).
    """
    unknown = set(outputs) - set(RADIANCE_OUTPUTS) - set(SEMANTIC_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {RADIANCE_OUTPUTS + SEMANTIC_OUTPUTS}")
    semantic = isinstance(model, SemanticModel) and bool(set(outputs) & set(SEMANTIC_OUTPUTS))
    if not semantic and set(outputs) & set(SEMANTIC_OUTPUTS):
        raise ValueError(f"{type(model).__name__} is not a semantic model: it has no {sorted(SEMANTIC_OUTPUTS)}")
    if set(outputs) & set(TEXT_OUTPUTS) and text is None:
        raise ValueError("cosines, relevancy and labels need the text embeddings (text=[C, D])")
    field = radiance_field(model)
    u, v = cameras.pixel_grid()
    u, v = u.reshape(-1), v.reshape(-1)
    index = torch.full_like(u, view, dtype=torch.long)
    want_features = semantic and bool(set(outputs) - {"selection"} - set(RADIANCE_OUTPUTS))
    parts: dict[str, list[torch.Tensor]] = {}
    for s in range(0, u.numel(), chunk):
        o, d = field.space.rays(cameras, index[s:s + chunk], u[s:s + chunk], v[s:s + chunk])
        if semantic:
            samples = march(field, o, d, step, weight_threshold=weight_threshold)
            viewdirs = nnf.normalize(d, dim=-1)[samples.ray_index] if "rgb" in outputs else None
            out = model.render(samples.xyz, samples.weights, samples.ray_index, samples.n_rays, viewdirs=viewdirs,
                               with_selection="selection" in outputs)
            got = {"depth": samples.depth, "acc": samples.accumulation}
            if want_features:
                got["features"] = nnf.normalize(out["features"], dim=-1)
            if "selection" in outputs:
                got["selection"] = out["selection"]
            if viewdirs is not None:
                got["rgb"] = out["rgb"].clamp(0, 1)
        else:
            got = render_rays(field, o, d, step, weight_threshold=weight_threshold)
        for key, value in got.items():
            if key in outputs or key == "features":
                parts.setdefault(key, []).append(value)
    h, w = cameras.height, cameras.width
    result = {key: torch.cat(values).view(h, w, *values[0].shape[1:]) for key, values in parts.items()}
    if text is not None and set(outputs) & set(TEXT_OUTPUTS):
        cosines = class_cosines(result["features"], text)
        if "cosines" in outputs:
            result["cosines"] = cosines
        if "relevancy" in outputs:
            result["relevancy"] = view_relevancy(cosines)
        if "labels" in outputs:
            result["labels"] = label_pixels(cosines, label_rule)
    if "features" not in outputs:
        result.pop("features", None)
    return result


def depth_to_gray(depth: torch.Tensor) -> np.ndarray:
    """Depth [H, W] -> [H, W] in [0, 1] for viewing: near = bright, stretched to the 1st-99th percentile."""
    d = depth.float().cpu()
    lo, hi = torch.quantile(d.flatten()[:1_000_000], torch.tensor([0.01, 0.99]))
    return (1 - ((d - lo) / (hi - lo).clamp(min=1e-6)).clamp(0, 1)).numpy()
