"""The viewer without a browser: the browser camera in ovs3d's camera model and ray space, frames through
``render_camera``, queries as matrix products on cached features, progressive rendering, the path video,
and the default bind address (the browser itself: ``test_viewer_browser.py``)."""

from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ovs3d.config import to_plain
from ovs3d.features.builtin import PROTOTYPES
from ovs3d.features.encoders import ClipConfig
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.field.tensorf import TensoRF
from ovs3d.render.camera import render_camera
from ovs3d.runs.load import field_sections
from ovs3d.runs.record import RunRecord
from ovs3d.runs.store import write_run
from ovs3d.scene.rayspace import NDCSpace
from ovs3d.train.configs import preset as stage_preset
from ovs3d.train.schedule import marching_step
from ovs3d.viewer.camera import (PinnedNDC, ViewCamera, dataset_view, from_viser, matrix_to_quat, quat_to_matrix,
                                 to_viser)
from ovs3d.viewer.frames import Colorizer, Settings, ViewRenderer, parse_queries, query_relevancy
from ovs3d.viewer.worker import Budget, ClientWorker

CLASSES = ["red ball", "blue box", "green cylinder"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A stage-2 run folder of an untrained semantic field (a density slab, random head) over a 3-view 32x24
    synthetic scene, with the built-in encoders' 13-d feature space (stands in for a trained run)."""
    from ovs3d.scene.synthetic import make_synthetic_scene

    root = tmp_path_factory.mktemp("viewer_unit")
    scene = make_synthetic_scene(root / "scene", n_views=3, width=32, height=24, n_annotated=1, supersample=1)
    space = NDCSpace()
    base = TensoRF(space, (16, 16, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for p in base.density_grid.planes:
            p.fill_(1.0)
        for line in base.density_grid.lines:
            line.fill_(0.05)
    config = SemanticConfig(mode="improved", feature_dim=len(PROTOTYPES))
    model = SemanticField(base, config, n_classes=len(CLASSES))
    model.class_text.copy_(torch.nn.functional.normalize(torch.randn(len(CLASSES), config.feature_dim), dim=-1))
    semantic = {k: v for k, v in model.state_dict().items() if not k.startswith("field.")}
    record = RunRecord(stage="segment", scene=str(scene.resolve()), space=space.to_dict(),
                       step=marching_step(space.box_tensor(), 48), width=32, height=24, iteration=1, complete=True,
                       config=to_plain(stage_preset("segment", "test")), arch=base.arch(), semantic=to_plain(config),
                       classes=list(CLASSES), encoders={"clip": "builtin-color-words (not CLIP)"},
                       builtin_encoders=True, inputs={"clip_config": to_plain(ClipConfig(kind="builtin"))})
    write_run(root / "stage2", record, {**field_sections(base), "semantic": semantic})
    return root / "stage2"


@pytest.fixture()
def renderer(tiny_run: Path) -> ViewRenderer:
    return ViewRenderer.from_run(tiny_run, "cpu")


def test_quaternions_and_the_viser_convention_round_trip() -> None:
    import viser.transforms as vtf

    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        rot = quat_to_matrix(q)
        np.testing.assert_allclose(rot, vtf.SO3(q).as_matrix(), atol=1e-9)
        np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(rot)), rot, atol=1e-9)
        c2w = np.concatenate([rot, rng.normal(size=(3, 1))], axis=1)
        wxyz, position = to_viser(c2w)
        np.testing.assert_allclose(from_viser(wxyz, position, 0.8, 1.5).c2w, c2w, atol=1e-9)
    # viser (OpenCV): the camera looks along its +z, +y points down; ovs3d (OpenGL): looks along -z, +y up
    c2w = np.eye(4)[:3]
    cv = vtf.SO3(to_viser(c2w)[0]).as_matrix()
    np.testing.assert_allclose(cv[:, 2], [0, 0, -1], atol=1e-12)
    np.testing.assert_allclose(cv[:, 1], [0, -1, 0], atol=1e-12)


def test_a_browser_camera_at_a_dataset_camera_gives_that_cameras_ndc_rays(renderer: ViewRenderer) -> None:
    cams = renderer.scene.cameras
    view = dataset_view(cams, 1)
    assert math.isclose(view.fov, 2 * math.atan(cams.height / 2 / float(cams.fy[1])))
    assert isinstance(renderer.field.space, PinnedNDC)
    for height in (cams.height, cams.height // 2):       # any resolution: the same rays through the same points
        mine = view.cameras(height)
        u, v = mine.pixel_grid()
        idx = torch.zeros(u.numel(), dtype=torch.long)
        o, d = renderer.field.space.rays(mine, idx, u.reshape(-1), v.reshape(-1))
        scale = cams.width / mine.width
        o_ref, d_ref = NDCSpace().rays(cams, torch.full_like(idx, 1), u.reshape(-1) * scale, v.reshape(-1) * scale)
        torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(nnf_unit(d), nnf_unit(d_ref), atol=1e-4, rtol=1e-4)
    # a wider browser field of view keeps the scene's NDC (not the browser camera's): the centre ray is the same
    wide = ViewCamera(view.c2w, view.fov * 1.5, 2.0).cameras(24)
    o, d = renderer.field.space.rays(wide, torch.zeros(1, dtype=torch.long), torch.tensor([24.0]), torch.tensor([12.0]))
    o_ref, d_ref = NDCSpace().rays(cams, torch.ones(1, dtype=torch.long), torch.tensor([16.0]), torch.tensor([12.0]))
    torch.testing.assert_close(o, o_ref, atol=1e-4, rtol=1e-4)
    # a camera turned around cannot be held by NDC: its rays miss the box (background)
    back = ViewCamera(view.c2w @ np.diag([-1.0, 1.0, -1.0, 1.0]), view.fov, view.aspect)
    frame = renderer.render(back, 12, ("rgb", "depth"))
    assert np.all(np.isfinite(frame.rgb)) and frame.rgb.max() == 0.0


def nnf_unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=-1, keepdim=True)


def test_a_frame_is_render_camera_of_the_dataset_view_in_strips_and_stops_when_asked(renderer: ViewRenderer) -> None:
    cams = renderer.scene.cameras
    renderer.chunk = 100                                   # 3 rows per strip: 8 strips
    frame = renderer.render(dataset_view(cams, 0), cams.height, ("rgb", "features"))
    ref = render_camera(renderer.model, cams, 0, renderer.record.step, ("rgb", "features"),
                        weight_threshold=renderer.weight_threshold)
    np.testing.assert_allclose(frame.rgb, ref["rgb"].numpy(), atol=1e-5)
    torch.testing.assert_close(frame.features, ref["features"], atol=1e-5, rtol=1e-4)
    assert (frame.width, frame.height) == (32, 24) and frame.selection is None
    calls = iter(range(100))
    assert renderer.render(dataset_view(cams, 0), 24, ("rgb",), should_stop=lambda: next(calls) >= 2) is None


def test_the_reference_settings_render_exactly_what_test_renders_and_the_fast_ones_stay_close(tiny_run: Path) -> None:
    exact = ViewRenderer.from_run(tiny_run, "cpu", precision="fp32", weight_threshold=1e-4)
    cams = exact.scene.cameras
    frame = exact.render(dataset_view(cams, 1), cams.height, ("rgb", "features"))
    ref = render_camera(exact.model, cams, 1, exact.record.step, ("rgb", "features"))   # test's defaults
    np.testing.assert_allclose(frame.rgb, ref["rgb"].numpy(), atol=1e-5)
    torch.testing.assert_close(frame.features, ref["features"], atol=1e-5, rtol=1e-4)
    fast = ViewRenderer.from_run(tiny_run, "cpu", precision="bf16", weight_threshold=1e-3)
    approx = fast.render(dataset_view(cams, 1), cams.height, ("rgb", "features"))
    assert fast.model.head_precision == "bf16"
    assert np.abs(approx.rgb - frame.rgb).max() < 0.02
    assert float((approx.features * frame.features).sum(-1).min()) > 0.99     # unit features: cosine


def test_queries_are_a_matrix_product_on_the_cached_frame(renderer: ViewRenderer, monkeypatch) -> None:
    assert parse_queries(" red, ,blue ball ,") == ("red", "blue ball")
    frame = renderer.render(dataset_view(renderer.scene.cameras, 0), 24, renderer.outputs("relevancy"))
    renders = []
    monkeypatch.setattr(renderer, "render", lambda *a, **k: renders.append(a))
    colorizer = Colorizer(renderer)
    red = colorizer.image(frame, Settings(mode="relevancy", queries=("red",)))
    both = colorizer.image(frame, Settings(mode="relevancy", queries=("red", "blue"), shown=1))
    assert red.shape == (24, 32, 3) and red.dtype == np.uint8 and not np.array_equal(red, both)
    rel = colorizer.relevancy(frame, Settings(mode="relevancy", queries=("red", "blue")))
    text = renderer.text(("red", "blue"))
    cos = torch.einsum("hwd,qd->qhw", frame.features, text).numpy()
    expected = (cos - cos.min((1, 2), keepdims=True)) / np.ptp(cos, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(rel, expected, atol=1e-5)
    neg = query_relevancy(frame.features, text, renderer.negatives())        # LERF negatives, encoded without a warning
    assert neg.shape == (2, 24, 32) and 0.0 <= neg.min() and neg.max() <= 1.0
    labels = colorizer.image(frame, Settings(mode="labels"))
    hidden = colorizer.image(frame, Settings(mode="labels", hidden=frozenset(range(len(CLASSES)))))
    assert not np.array_equal(labels, hidden)
    assert renders == [], "a new query, threshold or class toggle rendered again"
    assert "NOT CLIP or DINO" in renderer.encoder_label and "built-in" in renderer.encoder_label


class FakeRenderer:
    """Stands in for ``ViewRenderer``: each render sleeps ``pixels / rate`` seconds, in strips that check
    ``should_stop``."""

    semantic = True

    def __init__(self, rate: float) -> None:
        self.rate, self.calls = rate, []
        self.record = type("R", (), {"step": 0.01})()

    def outputs(self, mode: str) -> tuple[str, ...]:
        return ViewRenderer.outputs(self, mode)

    def render(self, view, height, outputs, step_factor=1.0, should_stop=None):
        from ovs3d.viewer.frames import Frame

        w, h = view.size(height)
        self.calls.append((w, h, step_factor))
        start = time.perf_counter()
        for _ in range(10):
            if should_stop is not None and should_stop():
                return None
            time.sleep(w * h / self.rate / 10)
        return Frame(view.key, w, h, 0.01 * step_factor, np.zeros((h, w, 3), np.float32), np.zeros((h, w), np.float32),
                     features=torch.zeros(h, w, 4), seconds=time.perf_counter() - start)


def run_worker(rate: float, target_s: float):
    renderer, sent = FakeRenderer(rate), []
    done = threading.Event()
    camera = [ViewCamera(np.eye(4)[:3], 1.0, 4 / 3)]
    settings = [Settings(mode="labels")]
    colorizer = type("C", (), {"image": lambda self, frame, s: np.zeros((frame.height, frame.width, 3), np.uint8)})()

    def send(image, frame, preview, s, colour_s):
        sent.append((frame.width, frame.height, preview, s.mode))
        if not preview:
            done.set()

    budget = Budget(target_s=target_s)
    budget.observe("semantic", 1.0, 1000, 1000 / rate)
    budget.observe("semantic", 2.0, 1000, 1000 / rate / 2)
    worker = ClientWorker(renderer, colorizer, budget, lambda: camera[0], lambda: settings[0], send, lambda: 120,
                          still_s=0.01)
    worker.start()
    worker.moved(force=True)
    return worker, renderer, sent, done, camera, settings


def test_progressive_rendering_previews_while_moving_and_refines_when_still() -> None:
    worker, renderer, sent, done, camera, settings = run_worker(rate=2e5, target_s=0.02)   # full frame: 0.1 s
    try:
        assert done.wait(10)
        preview, full = sent[0], sent[-1]
        assert preview[2] and not full[2] and full[:2] == (160, 120) and preview[1] < 120
        assert renderer.calls[0][2] == 2.0 and renderer.calls[-1][2] == 1.0     # the preview has half the samples
        n_calls = len(renderer.calls)
        done.clear()
        settings[0] = Settings(mode="relevancy", queries=("red",))             # the same outputs: recolour only
        worker.changed()
        deadline = time.monotonic() + 10
        while sent[-1][3] != "relevancy" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sent[-1] == (160, 120, False, "relevancy") and len(renderer.calls) == n_calls
        camera[0] = ViewCamera(np.eye(4)[:3] + 0.1, 1.0, 4 / 3)                 # a move renders again
        done.clear()
        worker.moved()
        assert done.wait(10) and len(renderer.calls) == n_calls + 2
        worker.moved()                                                          # the same camera again: nothing
        time.sleep(0.1)
        assert len(renderer.calls) == n_calls + 2
    finally:
        worker.stop()


def test_a_fast_device_renders_the_full_frame_at_once() -> None:
    worker, renderer, sent, done, *_ = run_worker(rate=1e8, target_s=0.1)
    try:
        assert done.wait(10)
        assert [s[2] for s in sent] == [False] and renderer.calls == [(160, 120, 1.0)]
    finally:
        worker.stop()


def test_the_path_video_renders_the_mode_along_the_spiral(renderer: ViewRenderer, tmp_path: Path) -> None:
    from ovs3d.viewer.path_video import render_path_video, video_name

    settings = Settings(mode="relevancy", queries=("red ball",))
    seen = []
    path = render_path_video(renderer, settings, tmp_path, 3, 16, lambda done, total: seen.append((done, total)))
    assert path.is_file() and path.stat().st_size > 0 and seen[-1] == (3, 3)
    assert path.name.startswith("relevancy_red_ball_") and video_name(Settings()) == "rgb_path.mp4"


def test_view_binds_127_0_0_1_unless_told(tiny_run: Path) -> None:
    from ovs3d.cli.main import parse
    from ovs3d.viewer.server import Viewer
    from test_viewer_browser import free_port, listening_addresses

    _, config = parse(["view", "--run", str(tiny_run)])
    assert config.host == "127.0.0.1"
    viewer = Viewer(ViewRenderer.from_run(tiny_run, "cpu"), port=free_port())
    try:
        assert viewer.url.startswith("http://127.0.0.1:")
        deadline = time.monotonic() + 20
        while not listening_addresses(viewer.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        if Path("/proc/net/tcp").is_file():
            assert listening_addresses(viewer.port) == {"127.0.0.1"}
    finally:
        viewer.stop()


def test_a_click_on_a_frustum_puts_the_browser_camera_there(renderer: ViewRenderer) -> None:
    from contextlib import nullcontext
    from types import SimpleNamespace

    from ovs3d.viewer.server import Viewer, focus_distance, frustum_scale

    client = SimpleNamespace(camera=SimpleNamespace(), atomic=nullcontext)
    view = dataset_view(renderer.scene.cameras, 2)
    shell = SimpleNamespace(up=np.array([0.0, 1.0, 0.0]), focus=focus_distance(renderer.scene.bounds))
    Viewer.jump(shell, client, view)
    np.testing.assert_allclose(client.camera.position, view.c2w[:, 3])
    forward = np.asarray(client.camera.look_at) - np.asarray(client.camera.position)
    np.testing.assert_allclose(forward / np.linalg.norm(forward), -view.c2w[:, 2], atol=1e-9)
    assert client.camera.fov == view.fov
    assert 0.0 < frustum_scale(renderer.scene.cameras.centers.double().numpy(), 1.0) <= 0.1


def test_the_query_product_in_the_heads_span_is_exact() -> None:
    from types import SimpleNamespace

    from ovs3d.viewer.frames import feature_basis

    gen = torch.Generator().manual_seed(0)
    last = torch.nn.Linear(32, 512)
    with torch.no_grad():
        feats = torch.nn.functional.normalize(last(torch.randn(6 * 8, 32, generator=gen)), dim=-1).reshape(6, 8, 512)
    basis = feature_basis(SimpleNamespace(feature_span=lambda: torch.cat([last.weight, last.bias[:, None]], 1)))
    assert basis.shape == (512, 33)
    torch.testing.assert_close(basis.t() @ basis, torch.eye(33), atol=1e-5, rtol=0)
    coords = feats.reshape(-1, 512) @ basis
    torch.testing.assert_close(coords @ basis.t(), feats.reshape(-1, 512), atol=1e-5, rtol=0)
    text = torch.nn.functional.normalize(torch.randn(3, 512, generator=gen), dim=-1)
    negatives = torch.nn.functional.normalize(torch.randn(2, 512, generator=gen), dim=-1)
    assert feature_basis(SimpleNamespace(feature_span=lambda: None)) is None   # a lifted model: no span
    for neg in (None, negatives):
        np.testing.assert_allclose(query_relevancy(feats, text, neg, coords, basis), query_relevancy(feats, text, neg),
                                   atol=1e-5)
    small = torch.nn.Linear(128, 13)
    span = torch.cat([small.weight, small.bias[:, None]], 1)
    assert feature_basis(SimpleNamespace(feature_span=lambda: span)) is None   # no smaller: not used
