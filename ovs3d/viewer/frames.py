"""The viewer's renderer: frames of any run at a browser camera, and the colouring of each mode.

A ``Frame`` holds what one render of one camera produced (rgb and depth always; for a stage-2 run the unit
CLIP-space features, and the scale selection when asked). Everything a mode shows is computed from a frame
without rendering again: labels are the argmax of cos(F, t_c) over the run's classes, the relevancy of typed
queries is one matrix product of the cached features with their text embeddings, so a new query costs
milliseconds (``Colorizer``). Rendering goes through ``render_camera`` in horizontal strips so that a render
can be abandoned between two strips when the camera moves again.

Interactive speed on a CPU comes from two approximations a viewer can afford (both options; the reference
render is ``precision="fp32", weight_threshold=1e-4``, what ``test`` uses): samples whose weight w_i is
under ``weight_threshold`` = 1e-3 are not shaded (on the demo scene 27 % fewer shaded samples for 0.3 % of
the composited weight), and the head's hidden layers and the shading MLP run with bf16 products where the
CPU has native bf16 (``precision="auto"``, ``field/shading.py``), fp32 elsewhere. ``bench.viewer`` reports
how many pixels' labels the fast frame changes against the reference render.

The query's matrix product is made smaller without changing its result: a semantic model's features end in
an affine layer, F = normalise(W h + acc b) with W [D, k] (k = 128 hidden units), so every rendered F lies
in the span of [W, b]. With an orthonormal basis B [D, k + 1] of that span (``feature_basis``), each full
frame keeps its coordinates C = F B [H W, k + 1] (computed in the render thread), and cos(F, t) = C (B^T t):
a product over k + 1 = 129 numbers per pixel instead of D = 512.

Relevancy (for query q with unit embedding t_q, pixel feature F):
  * plain: cos(F, t_q) min-max normalised over the frame (as ``ovs3d query``);
  * with the canonical negatives n_i ("object", "things", "stuff", "texture", LERF's):
    min_i exp(10 cos(F, t_q)) / (exp(10 cos(F, t_q)) + exp(10 cos(F, t_ni))), in [0, 1], 0.5 = no
    preference over the most similar negative (``features.relevancy.pairwise_relevancy``, as ``ovs3d test``).
Pixels at or above the threshold are heat-coloured over the RGB, the rest shown dimmed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ovs3d.errors import WeightsUnavailableError
from ovs3d.eval.segment_eval import scene_at_feature_resolution
from ovs3d.features.relevancy import negative_embeddings, pairwise_relevancy, text_embeddings
from ovs3d.field.base import SemanticModel
from ovs3d.field.shading import resolve_precision
from ovs3d.io.colormaps import class_colors, heatmap, label_boundaries
from ovs3d.render.camera import depth_to_gray, render_camera
from ovs3d.render.labels import class_cosines, label_pixels
from ovs3d.runs.load import load_run, run_text_encoder
from ovs3d.viewer.camera import ViewCamera, strip_camera, viewer_space

MODES = ("rgb", "depth", "labels", "relevancy", "selection")
SEMANTIC_MODES = ("labels", "relevancy", "selection")
VIEW_WEIGHT_THRESHOLD = 1e-3


@dataclass
class Frame:
    """One render of ``camera`` at ``width`` x ``height`` with marching step ``step``.

    rgb [H, W, 3] float32 in [0, 1], depth [H, W] (numpy); features [H, W, D] unit (torch, the model's
    device) and selection [H, W, S] (numpy) for a stage-2 run when rendered; ``seconds`` the render time."""

    key: tuple
    width: int
    height: int
    step: float
    rgb: np.ndarray
    depth: np.ndarray
    features: torch.Tensor | None = None
    selection: np.ndarray | None = None
    seconds: float = 0.0
    coords: torch.Tensor | None = None
    """[H W, r] the features in the renderer's ``basis`` (when it has one): F = coords @ basis^T."""

    def has(self, outputs: tuple[str, ...]) -> bool:
        """Whether this frame holds every one of ``outputs`` (rgb and depth it always holds)."""
        return all(name in ("rgb", "depth") or getattr(self, name, None) is not None for name in outputs)


@dataclass(frozen=True)
class Settings:
    """What the frame shows: the mode and its options (the state of the viewer's controls)."""

    mode: str = "rgb"
    queries: tuple[str, ...] = ()
    shown: int = 0
    """Index of the query shown in relevancy mode."""
    threshold: float = 0.5
    negatives: bool = False
    hidden: frozenset[int] = frozenset()
    """Classes toggled off in labels mode (shown as plain RGB)."""
    label_rule: str = "cosine"
    scale: int = -1
    """Selection mode: -1 = all scales as RGB, else one scale's weight."""


def parse_queries(text: str) -> tuple[str, ...]:
    """The comma-separated queries of a text box, stripped, empty ones dropped."""
    return tuple(q.strip() for q in text.split(",") if q.strip())


class ViewRenderer:
    """Renders frames of one run (stage 1 or 2) at viewer cameras and colours them per mode."""

    def __init__(self, model, record, scene, device: torch.device | str = "cpu", encoder=None,
                 encoder_error: str | None = None, chunk: int = 8192, precision: str = "auto",
                 weight_threshold: float = VIEW_WEIGHT_THRESHOLD) -> None:
        self.model, self.record, self.scene = model, record, scene
        self.device = torch.device(device)
        self.semantic = isinstance(model, SemanticModel)
        self.field = model.field if self.semantic else model
        self.field.space = viewer_space(self.field.space, scene.cameras)
        self.encoder, self.encoder_error, self.chunk = encoder, encoder_error, chunk
        self.weight_threshold = weight_threshold
        self.precision = resolve_precision(precision, self.device)
        (model.set_precision if self.semantic else self.field.set_shading)(self.precision)
        self.classes = list(record.classes) if self.semantic else []
        self.class_text = model.class_text.float() if self.semantic else None
        self.basis = feature_basis(model) if self.semantic else None
        self._text_cache: dict[str, torch.Tensor] = {}
        self._negatives: torch.Tensor | None = None

    @classmethod
    def from_run(cls, run: str | Path, device: torch.device | str = "cpu", precision: str = "auto",
                 weight_threshold: float = VIEW_WEIGHT_THRESHOLD) -> "ViewRenderer":
        """The renderer of a run folder: its model, its scene's cameras, and (stage 2) its text encoder."""
        model, record = load_run(run, device)
        scene = scene_at_feature_resolution(record, annotations=False)    # the run's resolution (either stage)
        encoder, error = None, None
        if record.stage == "segment":
            try:
                encoder = run_text_encoder(record, device)
            except WeightsUnavailableError as exc:
                error = str(exc)
        return cls(model, record, scene, device, encoder, error, precision=precision,
                   weight_threshold=weight_threshold)

    @property
    def modes(self) -> tuple[str, ...]:
        return MODES if self.semantic else ("rgb", "depth")

    @property
    def encoder_label(self) -> str:
        """What the UI says about the encoders."""
        if not self.semantic:
            return "stage-1 run (radiance field only): rgb and depth"
        names = ", ".join(f"{slot}: {name}" for slot, name in self.record.encoders.items())
        if self.record.builtin_encoders:
            return (f"built-in weight-free encoders, NOT CLIP or DINO ({names}); queries understand colour and "
                    "material words only")
        return f"encoders: {names}"

    def outputs(self, mode: str) -> tuple[str, ...]:
        """What a frame of ``mode`` needs rendered."""
        return {"labels": ("rgb", "features"), "relevancy": ("rgb", "features"),
                "selection": ("rgb", "selection")}.get(mode, ("rgb", "depth"))

    def render(self, view: ViewCamera, height: int, outputs: tuple[str, ...], step_factor: float = 1.0,
               should_stop: Callable[[], bool] | None = None) -> Frame | None:
        """A frame of ``view`` ``height`` pixels high; None when ``should_stop`` said so between strips."""
        start = time.perf_counter()
        cams = view.cameras(height).to(self.device)
        step = self.record.step * step_factor
        semantic = self.semantic and bool({"features", "selection"} & set(outputs))
        model = self.model if semantic else self.field
        wanted = ("rgb", "depth") + (tuple(o for o in ("features", "selection") if o in outputs) if semantic else ())
        rows = max(1, min(self.chunk // cams.width, -(-cams.height // 8)))   # 8 strips or more: a move stops it soon
        parts: dict[str, list[torch.Tensor]] = {}
        for r0 in range(0, cams.height, rows):
            if should_stop is not None and should_stop():
                return None
            strip = strip_camera(cams, r0, min(r0 + rows, cams.height))
            for k, v in render_camera(model, strip, 0, step, wanted, chunk=self.chunk,
                                          weight_threshold=self.weight_threshold).items():
                parts.setdefault(k, []).append(v)
        out = {k: torch.cat(v) for k, v in parts.items()}
        features = out.get("features")
        coords = None if features is None or self.basis is None else features.reshape(-1, features.shape[-1]) @ self.basis
        return Frame(key=view.key, width=cams.width, height=cams.height, step=step,
                     rgb=out["rgb"].float().cpu().numpy(), depth=out["depth"].float().cpu().numpy(),
                     features=features, coords=coords,
                     selection=out["selection"].float().cpu().numpy() if "selection" in out else None,
                     seconds=time.perf_counter() - start)

    def text(self, texts: tuple[str, ...]) -> torch.Tensor:
        """[Q, D] unit text embeddings (each text encoded once, then cached)."""
        if self.encoder is None:
            raise RuntimeError(self.encoder_error or "this run has no text encoder (a stage-1 run)")
        new = [t for t in texts if t not in self._text_cache]
        if new:
            for t, e in zip(new, text_embeddings(self.encoder, new).to(self.device)):
                self._text_cache[t] = e
        return torch.stack([self._text_cache[t] for t in texts])

    def negatives(self) -> torch.Tensor:
        """[N, D] unit embeddings of the canonical negatives (encoded once)."""
        if self.encoder is None:
            raise RuntimeError(self.encoder_error or "this run has no text encoder (a stage-1 run)")
        if self._negatives is None:
            self._negatives = negative_embeddings(self.encoder)[0].to(self.device)
        return self._negatives


class Colorizer:
    """Frame + settings -> the uint8 image shown; the relevancy maps of the last queries are kept, so moving
    the threshold or switching the shown query costs no matrix product."""

    def __init__(self, renderer: ViewRenderer) -> None:
        self.renderer = renderer
        self._relevancy_key: tuple | None = None
        self._relevancy: np.ndarray | None = None

    def image(self, frame: Frame, settings: Settings) -> np.ndarray:
        rgb = np.clip(frame.rgb, 0.0, 1.0)
        mode = settings.mode
        if mode == "depth":
            gray = depth_to_gray(torch.from_numpy(frame.depth))
            return to_uint8(np.repeat(gray[..., None], 3, axis=2))
        if mode == "labels" and frame.features is not None:
            return self.labels(frame, rgb, settings)
        if mode == "relevancy" and frame.features is not None and settings.queries:
            rel = self.relevancy(frame, settings)
            shown = rel[min(settings.shown, len(rel) - 1)]
            heat = heatmap(shown).astype(np.float32) / 255.0
            above = (shown >= settings.threshold)[..., None]
            return to_uint8(np.where(above, 0.3 * rgb + 0.7 * heat, 0.45 * rgb))
        if mode == "selection" and frame.selection is not None:
            sel = frame.selection
            if settings.scale < 0 or settings.scale >= sel.shape[-1]:
                colour = np.zeros_like(rgb)
                colour[..., :min(3, sel.shape[-1])] = sel[..., :3]
            else:
                colour = heatmap(sel[..., settings.scale]).astype(np.float32) / 255.0
            return to_uint8(0.3 * rgb + 0.7 * colour)
        return to_uint8(rgb)

    def labels(self, frame: Frame, rgb: np.ndarray, settings: Settings) -> np.ndarray:
        cosines = class_cosines(frame.features, self.renderer.class_text)
        labels = label_pixels(cosines, settings.label_rule).cpu().numpy()
        colors = class_colors(len(self.renderer.classes)).astype(np.float32) / 255.0
        mixed = 0.65 * colors[labels] + 0.35 * rgb
        if settings.hidden:
            off = np.isin(labels, sorted(settings.hidden))
            mixed[off] = rgb[off]
        mixed[label_boundaries(labels)] = 0.0
        return to_uint8(mixed)

    def relevancy(self, frame: Frame, settings: Settings) -> np.ndarray:
        """[Q, H, W] relevancy in [0, 1] of the settings' queries on the frame (cached per frame and queries)."""
        key = (id(frame), frame.key, frame.width, settings.queries, settings.negatives)
        if key != self._relevancy_key:
            self._relevancy = query_relevancy(frame.features, self.renderer.text(settings.queries),
                                              self.renderer.negatives() if settings.negatives else None,
                                              frame.coords, self.renderer.basis)
            self._relevancy_key = key
        return self._relevancy


def feature_basis(model) -> torch.Tensor | None:
    """[D, r] orthonormal basis of the model's ``feature_span`` (for a trained head: its last affine layer
    [W, b]), in which every rendered feature lies; None when the model has no span or it would not make the
    product smaller (r > D / 2)."""
    span = model.feature_span()
    if span is None:
        return None
    span = span.detach().float()
    if 2 * span.shape[1] > span.shape[0]:
        return None
    return torch.linalg.qr(span).Q


def query_relevancy(features: torch.Tensor, text: torch.Tensor, negatives: torch.Tensor | None = None,
                    coords: torch.Tensor | None = None, basis: torch.Tensor | None = None) -> np.ndarray:
    """Relevancy [Q, H, W] of unit features [H, W, D] for unit queries [Q, D]: one matrix product (with the
    negatives [N, D] appended when given), then min-max per query, or LERF's pairwise softmax. With the
    features' ``coords`` [H W, r] in an orthonormal ``basis`` [D, r] of their span, the product is taken there."""
    h, w, d = features.shape
    q = text.shape[0]
    rows = text if negatives is None else torch.cat([text, negatives])
    if coords is not None and basis is not None:
        cos = coords @ (rows.to(basis) @ basis).t()                  # [H W, Q (+ N)], r numbers per pixel
    else:
        flat = features.reshape(-1, d)
        cos = flat @ rows.to(flat).t()
    cos = cos.t()                                                    # [Q (+ N), H W]
    if negatives is None:
        lo, hi = cos.amin(1, keepdim=True), cos.amax(1, keepdim=True)
        rel = (cos - lo) / (hi - lo).clamp(min=1e-12)
    else:
        rel = pairwise_relevancy(cos[:q], cos[q:])
    return rel.reshape(q, h, w).float().cpu().numpy()


def to_uint8(image: np.ndarray) -> np.ndarray:
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

