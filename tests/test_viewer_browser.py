"""``ovs3d view`` in a real browser: headless Chromium (Debian's ``chromium``, never Playwright's download)
driven by Playwright, on a ``test``-preset run of the synthetic scene.

It waits for the first frame, types two queries in turn and checks that the canvas is not blank and that
the two relevancy frames differ (pixel statistics), and that the second query was answered from the
cached features (the frame's render time is the same: no re-render); then it switches to labels and
checks the legend. Every wait is on a condition (the status line, the canvas settling) with a generous
deadline. It also checks that the server listens on 127.0.0.1 only (the default).

Without chromium or playwright the test skips, unless ``OVS3D_REQUIRE_BROWSER=1`` (set by ``.ci/run``,
which installs both). ``OVS3D_VIEWER_RUN=<run folder>`` views that run instead of building one (the README's
picture is of the demo's stage-2 run); ``OVS3D_VIEWER_SCREENSHOT=<png>`` also saves the page there.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.browser
CHROMIUM = os.environ.get("OVS3D_CHROMIUM", "/usr/bin/chromium")
START_S, FRAME_S = 600.0, 300.0
"""Deadlines (seconds): for the server to start, for each awaited frame (a busy 2-core machine renders
a full test-run frame in seconds; the deadlines are there only to end a broken run)."""


def require_browser():
    """The Playwright sync API, or a skip naming what is missing (a failure under OVS3D_REQUIRE_BROWSER=1)."""
    missing = []
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        missing.append(f"Debian's chromium ({CHROMIUM}; apt-get install -y chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing.append("the playwright Python package (pip install playwright; its browser download is not used)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("OVS3D_REQUIRE_BROWSER") == "1":
            pytest.fail(message + " (OVS3D_REQUIRE_BROWSER=1)")
        pytest.skip(message)
    return sync_api


@pytest.fixture(scope="module")
def viewer_run(synthetic_scene: Path, tmp_path_factory) -> Path:
    """A stage-2 run to view: ``OVS3D_VIEWER_RUN``, or a ``test``-preset run of the synthetic scene with
    the built-in encoders (stage 1 and stage 2, built here)."""
    if os.environ.get("OVS3D_VIEWER_RUN"):
        return Path(os.environ["OVS3D_VIEWER_RUN"])
    require_browser()
    from ovs3d.cli.main import entrypoint

    root = tmp_path_factory.mktemp("viewer")
    entrypoint(["reconstruct", "--data", str(synthetic_scene), "--out", str(root / "stage1"), "--preset", "test",
                "--reconstruct.video-frames", "0", "--reconstruct.no-render-eval"])
    entrypoint(["segment", "--run", str(root / "stage1"), "--out", str(root / "stage2"), "--preset", "test",
                "--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin"])
    return root / "stage2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if int(hex_port, 16) == port and fields[3] == "0A":                 # 0A = LISTEN
                if len(address) == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, bytes.fromhex(address)[::-1]))
                else:
                    raw = b"".join(bytes.fromhex(address[i:i + 8])[::-1] for i in range(0, 32, 8))
                    found.add(socket.inet_ntop(socket.AF_INET6, raw))
    return found


class Server:
    """``ovs3d view`` in a subprocess; ``url`` once it has printed it."""

    def __init__(self, run: Path, port: int) -> None:
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready = threading.Event()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "ovs3d.cli.main", "view", "--run", str(run),
                                      "--port", str(port), "--threads", "1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            match = re.search(r"serving .* at (http://\S+)", line)
            if match:
                self.url = match.group(1)
                self.ready.set()
        self.ready.set()

    def wait(self, timeout: float) -> str:
        if not self.ready.wait(timeout) or self.url is None:
            raise AssertionError("ovs3d view did not print its URL:\n" + "\n".join(self.lines[-30:]))
        return self.url

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def canvas_pixels(page) -> np.ndarray:
    """[H, W, 3] uint8 screenshot of the viewer's (largest) canvas."""
    from PIL import Image

    boxes = [c.bounding_box() for c in page.locator("canvas").all()]
    box = max((b for b in boxes if b), key=lambda b: b["width"] * b["height"])
    image = Image.open(io.BytesIO(page.screenshot(clip=box)))
    return np.asarray(image.convert("RGB"))


def settled_canvas(page, timeout: float = 60.0) -> np.ndarray:
    """The canvas once two screenshots 0.3 s apart are the same (the last image has been decoded and drawn)."""
    deadline = time.monotonic() + timeout
    last = canvas_pixels(page)
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        now = canvas_pixels(page)
        if np.array_equal(now, last):
            return now
        last = now
    raise AssertionError("the canvas never settled")


def wait_status(page, pattern: str, timeout: float = FRAME_S) -> str:
    """The status line once it matches ``pattern`` (a full frame of the expected mode and query)."""
    from playwright.sync_api import expect

    status = page.get_by_text(re.compile(r"^frame \d+:"))
    expect(status).to_have_text(re.compile(pattern), timeout=timeout * 1000)
    return status.inner_text()


def not_blank(pixels: np.ndarray) -> None:
    assert pixels.std() > 8.0, f"the canvas is blank (pixel std {pixels.std():.1f})"
    assert len(np.unique(pixels.reshape(-1, 3)[::7], axis=0)) > 50, "the canvas holds hardly any colours"


def render_time(status: str) -> str:
    return re.search(r"render ([0-9.]+) s", status).group(1)


def test_viewer_in_a_browser(viewer_run: Path, tmp_path: Path) -> None:
    sync_api = require_browser()
    from ovs3d.runs.store import read_run

    record, _ = read_run(viewer_run, stage="segment")
    port = free_port()
    server = Server(viewer_run, port)
    try:
        url = server.wait(START_S)
        assert url.startswith("http://127.0.0.1:"), url
        addresses = listening_addresses(int(url.rsplit(":", 1)[1]))
        if addresses:
            assert addresses == {"127.0.0.1"}, f"ovs3d view listens on {addresses}; the default must be 127.0.0.1"
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
                                         args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 760})
                page.goto(url)
                wait_status(page, r"full \d+x\d+ · labels")
                for close in page.locator("button.mantine-Notification-closeButton").all():
                    close.click()
                not_blank(settled_canvas(page))

                queries = page.locator("xpath=//label[normalize-space()='Queries']/ancestor::div[2]//input")
                queries.fill("red")
                queries.press("Enter")
                red_status = wait_status(page, r'full \d+x\d+ · relevancy "red"')
                red = settled_canvas(page)
                queries.fill("blue")
                queries.press("Enter")
                blue_status = wait_status(page, r'full \d+x\d+ · relevancy "blue"')
                blue = settled_canvas(page)
                page.screenshot(path=str(tmp_path / "viewer.png"))
                if os.environ.get("OVS3D_VIEWER_SCREENSHOT"):
                    page.screenshot(path=os.environ["OVS3D_VIEWER_SCREENSHOT"])
                not_blank(red)
                not_blank(blue)
                diff = np.abs(red.astype(np.float32) - blue.astype(np.float32))
                assert diff.mean() > 2.0 and (diff.max(-1) > 40).mean() > 0.02, \
                    f"the two relevancy frames hardly differ (mean |diff| {diff.mean():.2f})"
                assert render_time(red_status) == render_time(blue_status), \
                    "a new query rendered again instead of reusing the frame's features"

                page.get_by_role("combobox", name="Mode", exact=True).click()
                page.get_by_role("option", name="labels", exact=True).click()
                wait_status(page, r"full \d+x\d+ · labels")
                not_blank(settled_canvas(page))
                legend = page.locator(".ovs3d-legend-name")
                assert legend.all_inner_texts() == record.classes
                for name in record.classes:
                    assert legend.get_by_text(name, exact=True).is_visible()
            finally:
                browser.close()
    finally:
        server.stop()
