"""``ovs3d view``: the viser server, its controls and the scene context (camera frustums, the scene's path).

The page shows the run rendered from the browser's camera as the scene's background image, with the
dataset cameras as frustums (click one to jump to it) and the scene's path (spiral or orbit) as a curve. Controls: the mode
(rgb, depth, labels, relevancy, selection), the queries (comma separated; a new query is a matrix product
on the cached features), the relevancy threshold, the canonical negatives, the class legend with one
toggle per class, the scale of the selection mode, the frame-time budget, and a button that renders the
current mode along that path to an mp4. The status line says what the last frame was.
"""

from __future__ import annotations

import html
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import viser

from ovs3d.io.colormaps import class_colors
from ovs3d.scene.paths import video_path
from ovs3d.viewer.camera import ViewCamera, dataset_view, from_viser, look_target, to_viser
from ovs3d.viewer.frames import Colorizer, Settings, ViewRenderer, parse_queries
from ovs3d.viewer.path_video import render_path_video
from ovs3d.viewer.worker import Budget, ClientWorker, warm_up

LABEL_RULES = ("cosine", "relevancy")


def focus_distance(bounds: np.ndarray) -> float:
    """The spiral path's focus depth (``scene/paths.py``): where the orbit centre is put."""
    return float(1.0 / (0.25 / (0.9 * bounds.min()) + 0.75 / (5.0 * bounds.max())))


def frustum_scale(centers: np.ndarray, near: float) -> float:
    """Frustum size: 0.3 of the median distance between neighbouring cameras (forward-facing captures have
    them close together), within 1 % to 10 % of the nearest depth bound."""
    if len(centers) < 2:
        return 0.1 * near
    dist = np.linalg.norm(centers[:, None] - centers[None], axis=-1) + np.diag(np.full(len(centers), np.inf))
    return float(np.clip(0.3 * np.median(dist.min(1)), 0.01 * near, 0.1 * near))


def legend_html(classes: list[str]) -> str:
    """The class legend: one colour swatch and name per class, in class order."""
    colors = class_colors(len(classes))
    rows = "".join(
        f'<div class="ovs3d-legend-row" style="display:flex;align-items:center;gap:6px;margin:2px 0">'
        f'<span style="display:inline-block;width:14px;height:14px;background:rgb{tuple(int(c) for c in colors[i])};'
        f'border:1px solid #0004"></span><span class="ovs3d-legend-name">{html.escape(name)}</span></div>'
        for i, name in enumerate(classes))
    return f'<div class="ovs3d-legend" style="font-size:0.85em">{rows}</div>'


class Viewer:
    """A running viewer of one run: ``url`` to open; ``stop()`` ends it."""

    def __init__(self, renderer: ViewRenderer, host: str = "127.0.0.1", port: int = 8080, out: Path | None = None,
                 target_ms: float = 150.0, height: int | None = None, path_frames: int = 60) -> None:
        self.renderer = renderer
        self.out = Path(out) if out is not None else None
        self.path_frames = path_frames
        self.budget = Budget(target_s=target_ms / 1000.0)
        self.settings = Settings(mode="labels" if renderer.semantic else "rgb")
        self.settings_lock = threading.Lock()
        self.height = int(height or renderer.record.height)
        self.workers: dict[int, ClientWorker] = {}
        self.frames_sent = 0
        self.host = host
        self.server = viser.ViserServer(host=host, port=port, label="ovs3d view", verbose=False)
        self.port = self.server.get_port()
        warm_up(renderer, self.budget, self.height, dataset_view(renderer.scene.cameras, self.start_view))
        self._scene_context()
        self._controls()
        self.server.on_client_connect(self._connect)
        self.server.on_client_disconnect(self._disconnect)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        for worker in list(self.workers.values()):
            worker.stop()
        self.server.stop()

    # --- set-up -------------------------------------------------------------------------------------------

    @property
    def start_view(self) -> int:
        return self.renderer.scene.train_views[0] if self.renderer.scene.train_views else 0

    def _scene_context(self) -> None:
        scene = self.renderer.scene
        cams = scene.cameras
        up = cams.c2w[:, :, 1].double().mean(0).numpy()
        self.up = up / np.linalg.norm(up)
        start = dataset_view(cams, self.start_view)
        # the orbit centre: the spiral's focus ahead of a forward capture, the look-at origin of a 360 one
        self.focus = (focus_distance(scene.bounds) if scene.kind == "forward"
                      else float(np.linalg.norm(start.c2w[:, 3])))
        self.server.scene.set_up_direction(tuple(self.up))
        initial = self.server.initial_camera
        initial.up = tuple(self.up)
        initial.position = tuple(start.c2w[:, 3])
        initial.look_at = tuple(look_target(start, self.focus))
        initial.fov = start.fov
        initial.near, initial.far = 0.01 * float(scene.bounds.min()), 100.0 * float(scene.bounds.max())
        scale = frustum_scale(cams.centers.double().numpy(), float(scene.bounds.min()))
        self.frustums = []
        for i in range(len(cams)):
            view = dataset_view(cams, i)
            wxyz, position = to_viser(view.c2w)
            frustum = self.server.scene.add_camera_frustum(
                f"/cameras/{i:03d}", fov=view.fov, aspect=view.aspect, scale=scale, wxyz=wxyz, position=position,
                color=(60, 120, 220), thickness=1.5, thickness_units="screen")
            frustum.on_click(lambda event, view=view: self.jump(event.client, view))
            self.frustums.append(frustum)
        path = video_path(cams, scene.bounds, scene.kind, 120)
        self.path_handle = self.server.scene.add_spline_catmull_rom(
            "/spiral", points=path.centers.double().numpy(), closed=True, color=(230, 120, 30), thickness=2.0,
            thickness_units="screen")

    def jump(self, client, view: ViewCamera) -> None:
        """Put a client's camera at ``view`` (a dataset camera)."""
        with client.atomic():
            client.camera.up_direction = tuple(self.up)
            client.camera.position = tuple(view.c2w[:, 3])
            client.camera.look_at = tuple(look_target(view, self.focus))
            client.camera.fov = view.fov

    def _controls(self) -> None:
        gui, r = self.server.gui, self.renderer
        gui.add_markdown(f"**{html.escape(Path(r.record.scene).name)}** · {r.record.stage} run · "
                         f"{r.record.width}x{r.record.height}")
        self.encoders_note = gui.add_markdown(f"*{html.escape(r.encoder_label)}*")
        self.status = gui.add_markdown("status: waiting for the browser's camera")
        self.mode = gui.add_dropdown("Mode", r.modes, initial_value=self.settings.mode)
        self.mode.on_update(lambda _: self.update(mode=self.mode.value))
        if r.semantic:
            with gui.add_folder("Query"):
                self.query = gui.add_text("Queries", initial_value="",
                                          hint="one or several texts, comma separated (a new query costs a "
                                               "matrix product on the rendered features)")
                self.shown = gui.add_dropdown("Shown query", ("(none)",), initial_value="(none)")
                self.threshold = gui.add_slider("Threshold", min=0.0, max=1.0, step=0.01,
                                                initial_value=self.settings.threshold)
                self.negatives = gui.add_checkbox("Canonical negatives", initial_value=False,
                                                  hint="LERF's: relevancy against 'object', 'things', 'stuff', "
                                                       "'texture' (0.5 = no better than the closest)")
                if r.encoder is None:
                    gui.add_markdown(f"queries unavailable: {html.escape(r.encoder_error or '')}")
            self.query.on_update(lambda _: self._queries())
            self.shown.on_update(lambda _: self.update(shown=self._shown_index()))
            self.threshold.on_update(lambda _: self.update(threshold=float(self.threshold.value)))
            self.negatives.on_update(lambda _: self.update(negatives=bool(self.negatives.value)))
            with gui.add_folder("Labels"):
                self.rule = gui.add_dropdown("Label rule", LABEL_RULES, initial_value="cosine")
                gui.add_html(legend_html(r.classes))
                with gui.add_folder("Show classes", expand_by_default=False):
                    self.toggles = [gui.add_checkbox(name, initial_value=True) for name in r.classes]
            self.rule.on_update(lambda _: self.update(label_rule=self.rule.value))
            for toggle in self.toggles:
                toggle.on_update(lambda _: self.update(hidden=frozenset(
                    i for i, t in enumerate(self.toggles) if not t.value)))
            with gui.add_folder("Selection", expand_by_default=False):
                n_scales = r.model.config.n_scales
                self.scale = gui.add_dropdown("Scale", ("all (RGB)",) + tuple(f"scale {s}" for s in range(n_scales)))
            self.scale.on_update(lambda _: self.update(scale=-1 if self.scale.value.startswith("all")
                                                       else int(self.scale.value.split()[-1])))
        with gui.add_folder("Rendering", expand_by_default=False):
            self.target = gui.add_slider("Preview frame (ms)", min=30, max=1000, step=10,
                                         initial_value=int(self.budget.target_s * 1000))
            self.full = gui.add_number("Full frame height", initial_value=self.height, min=8, max=4096, step=1)
        self.target.on_update(lambda _: setattr(self.budget, "target_s", float(self.target.value) / 1000.0))
        self.full.on_update(lambda _: self._set_height(int(self.full.value)))
        with gui.add_folder("Path"):
            self.show_cameras = gui.add_checkbox("Dataset cameras", initial_value=True)
            self.show_path = gui.add_checkbox("Spiral path", initial_value=True)
            self.video_button = gui.add_button("Render path video (current mode)")
            self.video_status = gui.add_markdown("")
        self.show_cameras.on_update(lambda _: self._visibility())
        self.show_path.on_update(lambda _: self._visibility())
        self.video_button.on_click(lambda event: self._path_video(event.client))

    # --- state ----------------------------------------------------------------------------------------------

    def current(self) -> Settings:
        with self.settings_lock:
            return self.settings

    def update(self, **changes) -> None:
        with self.settings_lock:
            self.settings = replace(self.settings, **changes)
        for worker in list(self.workers.values()):
            worker.changed()

    def _queries(self) -> None:
        queries = parse_queries(self.query.value)
        options = queries if queries else ("(none)",)
        self.shown.options = options
        self.shown.value = options[0]
        self.update(queries=queries, shown=0, mode="relevancy" if queries else self.current().mode)
        if queries and self.mode.value != "relevancy":
            self.mode.value = "relevancy"

    def _shown_index(self) -> int:
        queries = self.current().queries
        return queries.index(self.shown.value) if self.shown.value in queries else 0

    def _set_height(self, height: int) -> None:
        self.height = max(8, height)
        for worker in list(self.workers.values()):
            worker.moved(force=True)

    def _visibility(self) -> None:
        for frustum in self.frustums:
            frustum.visible = bool(self.show_cameras.value)
        self.path_handle.visible = bool(self.show_path.value)

    # --- clients --------------------------------------------------------------------------------------------

    def _connect(self, client) -> None:
        def camera() -> ViewCamera | None:
            cam = client.camera
            if cam._state.update_timestamp == 0.0 or cam.image_height <= 0:  # noqa: SLF001 - no message yet
                return None
            return from_viser(cam.wxyz, cam.position, cam.fov, cam.aspect)

        def send(image, frame, preview, settings, colour_s) -> None:
            client.scene.set_background_image(image, format="jpeg", jpeg_quality=90)
            self.frames_sent += 1
            what = settings.mode
            if settings.mode == "relevancy" and settings.queries:
                what += f' "{settings.queries[min(settings.shown, len(settings.queries) - 1)]}"'
                if settings.negatives:
                    what += " (canonical negatives)"
            self.status.content = (f"frame {self.frames_sent}: {'preview' if preview else 'full'} "
                                   f"{frame.width}x{frame.height} · {what} · render {frame.seconds:.2f} s, "
                                   f"colour {1000 * colour_s:.1f} ms")

        worker = ClientWorker(self.renderer, Colorizer(self.renderer), self.budget, camera, self.current, send,
                              lambda: self.height, on_error=self._error)
        self.workers[client.client_id] = worker
        client.camera.on_update(lambda _: worker.moved())
        worker.start()
        worker.moved(force=True)

    def _disconnect(self, client) -> None:
        worker = self.workers.pop(client.client_id, None)
        if worker is not None:
            worker.stop()

    def _error(self, message: str) -> None:
        self.status.content = f"error: {html.escape(message)}"

    def _path_video(self, client) -> None:
        if self.out is None:
            self.video_status.content = "no output folder (--out)"
            return
        self.video_button.disabled = True
        settings = self.current()

        def progress(done: int, total: int) -> None:
            self.video_status.content = f"rendering the path: frame {done}/{total}"

        def work() -> None:
            try:
                start = time.perf_counter()
                path = render_path_video(self.renderer, settings, self.out, self.path_frames, self.height, progress)
                self.video_status.content = f"wrote {html.escape(str(path))} ({time.perf_counter() - start:.0f} s)"
                if client is not None:
                    client.send_file_download(path.name, path.read_bytes())
            except Exception as exc:  # noqa: BLE001 - shown in the UI, the viewer goes on
                self.video_status.content = f"path video failed: {html.escape(f'{type(exc).__name__}: {exc}')}"
            finally:
                self.video_button.disabled = False

        threading.Thread(target=work, daemon=True, name="ovs3d-view-path").start()
