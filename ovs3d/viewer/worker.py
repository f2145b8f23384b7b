"""Progressive rendering in a background thread, one per browser client, so the UI never waits on a render.

After each camera move the worker renders a preview first, when a full frame would take longer than the
target frame time: its size and samples come from the measured render rate (``Budget``): about
``target_s`` seconds of work, at twice the marching step (half the samples per ray). When the camera has
then stayed still for ``still_s``, the full frame (the run's resolution, or ``--height``) is rendered at
the run's own step, in strips, abandoned as soon as the camera moves again. A change of mode or query that
the last full frame can answer (its features are cached) is only recoloured: no render. On a GPU, where a
full frame fits in the target time, the preview is skipped.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ovs3d.viewer.camera import ViewCamera
from ovs3d.viewer.frames import Frame

PREVIEW_STEP_FACTOR = 2.0
MIN_PREVIEW_HEIGHT = 12
RENDER_LOCK = threading.Lock()
"""One render at a time in the process: clients share the cores (and the model)."""


@dataclass
class Budget:
    """Render rates (pixels per second, per kind of frame and step factor), measured as frames are made,
    and the frame sizes they allow within ``target_s``."""

    target_s: float = 0.15
    rates: dict[tuple[str, float], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def observe(self, kind: str, step_factor: float, pixels: int, seconds: float) -> None:
        rate = pixels / max(seconds, 1e-4)
        with self.lock:
            old = self.rates.get((kind, step_factor))
            self.rates[(kind, step_factor)] = rate if old is None else 0.5 * old + 0.5 * rate

    def rate(self, kind: str, step_factor: float) -> float:
        with self.lock:
            known = self.rates.get((kind, step_factor))
            if known is None and (kind, 1.0) in self.rates:      # unknown preview rate: guess from full frames
                known = self.rates[(kind, 1.0)] * step_factor
        return known if known is not None else 2e4

    def seconds(self, kind: str, step_factor: float, pixels: int) -> float:
        return pixels / self.rate(kind, step_factor)

    def preview_height(self, kind: str, aspect: float, full_height: int) -> int:
        """The height of a preview frame that renders in about ``target_s`` (at most the full height)."""
        pixels = self.rate(kind, PREVIEW_STEP_FACTOR) * self.target_s
        height = int(math.sqrt(max(pixels, 1.0) / max(aspect, 1e-3)))
        return int(np.clip(height, min(MIN_PREVIEW_HEIGHT, full_height), full_height))


def warm_up(renderer, budget: Budget, height: int, view: ViewCamera) -> None:
    """Render a small frame of each kind (and step factor) once: torch warms up, the budget gets its first
    rates (the viewer does this at start, before any browser connects)."""
    kinds = [("radiance", ("rgb", "depth"))] + ([("semantic", ("rgb", "features"))] if renderer.semantic else [])
    for kind, outputs in kinds:
        renderer.render(view, 8, outputs)          # untimed: builds what is built on first use (lookup volumes)
        for factor in (1.0, PREVIEW_STEP_FACTOR):
            frame = renderer.render(view, max(height // 4, 8), outputs, factor)
            budget.observe(kind, factor, frame.width * frame.height, frame.seconds)


class ClientWorker(threading.Thread):
    """The render thread of one client.

    ``camera()`` returns the client's current ``ViewCamera`` (or None before its first camera message);
    ``settings()`` the viewer's ``Settings``; ``send(image, frame, preview, settings)`` shows a frame.
    ``moved()`` and ``changed()`` wake the thread: a camera move abandons a render in progress, a change of
    settings does not (the frame is coloured with the settings current when it is sent)."""

    def __init__(self, renderer, colorizer, budget: Budget, camera: Callable[[], ViewCamera | None],
                 settings: Callable[[], object], send: Callable, full_height: Callable[[], int],
                 still_s: float = 0.12, on_error: Callable[[str], None] | None = None) -> None:
        super().__init__(daemon=True, name="ovs3d-view-render")
        self.renderer, self.colorizer, self.budget = renderer, colorizer, budget
        self.camera, self.settings, self.send, self.full_height = camera, settings, send, full_height
        self.still_s, self.on_error = still_s, on_error
        self.cond = threading.Condition()
        self.camera_version = 0
        self.settings_version = 0
        self.alive = True
        self.frame: Frame | None = None
        self.last_key: tuple | None = None
        self.threads = torch.get_num_threads()      # the process's setting (--threads); OpenMP's is per thread

    def moved(self, force: bool = False) -> None:
        """The client's camera sent an update: a new camera version unless it did not actually move."""
        view = self.camera()
        key = None if view is None else view.key
        with self.cond:
            if key == self.last_key and not force:
                return
            self.last_key = key
            self.camera_version += 1
            self.cond.notify_all()

    def changed(self) -> None:
        with self.cond:
            self.settings_version += 1
            self.cond.notify_all()

    def stop(self) -> None:
        with self.cond:
            self.alive = False
            self.cond.notify_all()

    def run(self) -> None:
        torch.set_num_threads(self.threads)
        done = (0, 0)                                            # wait for the first moved()
        while True:
            with self.cond:
                while self.alive and (self.camera_version, self.settings_version) == done:
                    self.cond.wait(timeout=1.0)
                if not self.alive:
                    return
                now = (self.camera_version, self.settings_version)
            try:
                self.update(now[0])
            except Exception as exc:  # noqa: BLE001 - a failed frame is reported in the UI; the thread goes on
                traceback.print_exc()
                if self.on_error is not None:
                    self.on_error(f"{type(exc).__name__}: {exc}")
            done = now

    def _camera_moved_since(self, version: int) -> bool:
        return self.camera_version != version or not self.alive

    def update(self, version: int) -> None:
        """Bring the client's picture up to date for camera ``version`` (preview, then full frame)."""
        view = self.camera()
        if view is None:
            return
        settings = self.settings()
        outputs = self.renderer.outputs(settings.mode)
        full_h = self.full_height()
        width, height = view.size(full_h)
        frame = self.frame
        if frame is not None and frame.key == view.key and (frame.width, frame.height) == (width, height) \
                and frame.step == self.renderer.record.step and frame.has(outputs):
            self._show(frame, False)                             # the settings changed: recolour only
            return
        kind = "semantic" if self.renderer.semantic and {"features", "selection"} & set(outputs) else "radiance"
        stop = lambda: self._camera_moved_since(version)       # noqa: E731
        if self.budget.seconds(kind, 1.0, width * height) > self.budget.target_s:
            preview_h = self.budget.preview_height(kind, view.aspect, full_h)
            preview = self._render(view, preview_h, outputs, kind, PREVIEW_STEP_FACTOR, stop)
            if preview is None:
                return
            self._show(preview, True)
            with self.cond:
                self.cond.wait_for(stop, timeout=self.still_s)
            if stop():
                return
        full = self._render(view, full_h, outputs, kind, 1.0, stop)
        if full is None:
            return
        self.frame = full
        self._show(full, False)

    def _render(self, view, height, outputs, kind, step_factor, stop) -> Frame | None:
        with RENDER_LOCK:
            frame = self.renderer.render(view, height, outputs, step_factor, stop)
        if frame is not None:
            self.budget.observe(kind, step_factor, frame.width * frame.height, frame.seconds)
        return frame

    def _show(self, frame: Frame, preview: bool) -> None:
        settings = self.settings()
        start = time.perf_counter()
        image = self.colorizer.image(frame, settings)
        self.send(image, frame, preview, settings, time.perf_counter() - start)
