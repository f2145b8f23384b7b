"""Catalogue of realistic user mistakes and faults, each run as a new user would run it.

Every case is one subprocess of the real command line (``python -m ovs3d.cli.main <verb> ...``) in a
fresh temporary working directory, with a timeout. The inputs are built from a small synthetic scene
(``make-scene``, 8 views of 64x48, with masks) and one completed ``run`` (preset ``test``, built-in
encoders, no video), both made once at the start. For each case the script records the class of
mistake, the command, the exit code, the last line of stderr (the message), the seconds from start to
exit, whether stderr holds a Python traceback, what was left on disk (new, changed, removed and moved
files under the case's folder; every pre-existing file is compared by SHA-1 before and after; paths in
the recorded messages are relative to the case's folder) and a verdict (PASS, NOTE = accepted and worth knowing, FAIL = a defect for the owner of ``ovs3d/``).

Targets, checked and reported: 0 tracebacks, 0 data loss (no pre-existing file changed or removed by a
failing command), 0 path escapes (a class prompt never makes ovs3d read a file outside the scene: a
sentinel file whose access time is reset before the run shows any read, and a mask scene must refuse
path-like prompts naming classes.txt), 0 executed pickles, and every error that preflight can check
(``preflight: true``) within 10 s of start. Bad input should exit 2 with one line
``ovs3d: error: <path>: <problem>. Fix: <fix>``.

Run: ``python3 -m bench.bad_inputs [--only ID[,ID...]] [--keep]`` (about 4-6 minutes on 2 cores);
writes ``bench/results/bad_inputs.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np

from bench.common import cpu_flags, write_result

CLI = [sys.executable, "-m", "ovs3d.cli.main"]
ENC = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin"]
RUN = ["run", "--preset", "test", *ENC, "--test.video-frames", "0"]
PREFLIGHT_LIMIT_S = 10.0
ERROR_FORM = re.compile(r"^ovs3d: error: .+\. Fix: .+")
CLASSES = ["red ball", "blue box", "yellow cone", "green cylinder", "purple box", "brown wooden floor",
           "grey stone wall"]
LONG_PROMPT = " ".join(["a small shiny red rubber ball lying on the brown wooden floor next to the wall"] * 20)  # 300 words


# ----------------------------------------------------------------------------------------------- fixtures

@dataclass
class Fixtures:
    """The shared inputs, made once: a scene with masks (``S``) and a completed run of it (``O``)."""
    root: Path
    scene: Path = field(init=False)
    run: Path = field(init=False)

    def __post_init__(self) -> None:
        self.scene, self.run = self.root / "S", self.root / "O"


def build_fixtures(root: Path) -> Fixtures:
    fx = Fixtures(root)
    for args in (["make-scene", "--out", "S", "--n-views", "8", "--width", "64", "--height", "48"],
                 [*RUN, "--data", "S", "--out", "O"],
                 ["query", "--run", "O/segment", "--text", "red ball"]):
        done = subprocess.run([*CLI, *args], cwd=root, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise SystemExit(f"bench: fixture command {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return fx


# ----------------------------------------------------------------------------------------------- helpers

class Ctx:
    """What a case's setup gets: its folder, the fixtures, and places to register sentinels and cleanups."""

    def __init__(self, folder: Path, fx: Fixtures):
        self.dir, self.fx = folder, fx
        self.sentinels: list[Path] = []          # files that must never be read
        self.cleanups: list[Callable[[], None]] = []
        self.info: dict = {}

    def scene(self, name: str = "S", masks: bool = True) -> Path:
        dst = self.dir / name
        shutil.copytree(self.fx.scene, dst, ignore=shutil.ignore_patterns("features"))
        if not masks:
            shutil.rmtree(dst / "segmentations")
        return dst

    def run_copy(self, name: str = "O") -> Path:
        dst = self.dir / name
        shutil.copytree(self.fx.run, dst)
        return dst

    def sentinel(self, rel: str) -> Path:
        """A valid 64x48 mask image at ``rel`` that ovs3d must never open."""
        path = self.dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.fx.scene / "segmentations" / "00" / "red ball.png", path)
        self.sentinels.append(path)
        return path


def write_classes(scene: Path, lines: list[str] | bytes) -> None:
    path = scene / "segmentations" / "classes.txt"
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode("utf-8"))


def rename_class(scene: Path, old: str, new: str) -> None:
    """Replace prompt ``old`` by ``new`` in classes.txt (mask files are left as they are)."""
    write_classes(scene, [new if c == old else c for c in CLASSES])


def annotated_views(scene: Path) -> list[Path]:
    return sorted(p for p in (scene / "segmentations").iterdir() if p.is_dir())


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(width: int = 200_000, height: int = 200_000) -> bytes:
    """A 1-bit greyscale PNG header claiming width x height pixels (4e10: past PIL's bomb limit), ~100 bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + png_chunk(b"IEND", b""))


class Payload:
    """Unpickling this runs ``touch <target>``: a weights file or .npy that would execute code."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return os.system, (f"touch '{self.target}'",)


def small_safetensors(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(256, 256)}, str(path))
    return path


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(folder: Path, pid: int, host: str | None = None, purpose: str = "x") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "started": datetime.now().astimezone().isoformat(timespec="seconds"),
              "host": host or socket.gethostname(), "purpose": purpose}
    (folder / ".ovs3d.lock").write_text(json.dumps(record))


def llff_poses(scene: Path):
    from ovs3d.scene.llff import llff_to_ovs3d, read_poses_bounds

    images = sorted((scene / "images").iterdir())
    c2w_llff, bounds, (h, w, f) = read_poses_bounds(scene / "poses_bounds.npy", len(images))
    return images, llff_to_ovs3d(c2w_llff), bounds, (h, w, f)


def to_transforms(scene: Path, n_frames: int | None = None) -> None:
    """Replace the scene's poses_bounds.npy by an equivalent transforms.json (of the first n_frames)."""
    from ovs3d.scene.nerfstudio import write_transforms

    images, c2w, bounds, (h, w, f) = llff_poses(scene)
    n = n_frames or len(images)
    intr = np.tile([[f, f, w / 2, h / 2]], (n, 1))
    write_transforms(scene / "transforms.json", images[:n], c2w[:n], intr, (int(w), int(h)), bounds[:n])
    (scene / "poses_bounds.npy").unlink()


def stream_until(argv: list[str], cwd: Path, pattern: str, min_value: int, sig: int, timeout: float,
                 group: bool) -> tuple[subprocess.Popen, list[str], bool]:
    """Start ``argv``; when stderr shows ``pattern`` with its group(1) >= min_value, send ``sig`` (to the
    process group when ``group``). Returns (the process, the stderr chunks read so far, whether it was sent)."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    chunks: list[str] = []
    out_chunks: list[str] = []

    def pump(stream, sink):
        for block in iter(lambda: stream.read1(4096), b""):
            sink.append(block.decode("utf-8", "replace"))

    threads = [threading.Thread(target=pump, args=(proc.stderr, chunks), daemon=True),
               threading.Thread(target=pump, args=(proc.stdout, out_chunks), daemon=True)]
    for t in threads:
        t.start()
    regex, sent, start = re.compile(pattern), False, time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout:
        values = [int(m.group(1)) for m in regex.finditer("".join(chunks))]
        if values and max(values) >= min_value:
            (os.killpg if group else os.kill)(proc.pid, sig)
            sent = True
            break
        time.sleep(0.05)
    try:
        proc.wait(timeout=max(5.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for t in threads:
        t.join(timeout=5)
    proc.out_text = "".join(out_chunks)  # type: ignore[attr-defined]
    return proc, chunks, sent


STAGE1_PROGRESS = r"reconstruct:\s+\d+%\|[^|]*\|\s*(\d+)/\d+"


# ----------------------------------------------------------------------------------------------- cases

@dataclass
class Case:
    id: str
    cls: str
    args: list[str]                 # after ``python -m ovs3d.cli.main``; {FS} / {FO} = fixture scene / run
    setup: Callable[[Ctx], None] | None = None
    expect: str = "error"           # error: exit 2 + the one-line form; usage: exit 2 from the parser;
                                    # ok: exit 0; interrupt: exit 130 naming how to resume; any: no expectation
    mention: tuple[str, ...] = ()   # substrings the message (stderr, stdout for ok) must contain
    preflight: bool = True          # the problem can be found before any long work: must fail < 10 s
    escape_if_accepted: bool = False  # exit 0 means the prompt was used as a path (mask scene)
    write_roots: tuple[str, ...] | None = None  # where new files may appear (None: anywhere in the case dir)
    protect: bool = False           # pre-existing files must survive even when the command succeeds
    may_rewrite: tuple[str, ...] = ()  # pre-existing files (relative, suffix match) a success may rewrite
    signal_at: tuple[int, int] | None = None   # (signal, stage-1 iteration) to interrupt the process at
    check: Callable[[Ctx, dict], str | None] | None = None  # extra check: a failure reason or None
    note: str = ""
    timeout: float = 90.0


# --- setups

def s_scene(ctx): ctx.scene()
def s_runcopy(ctx): ctx.run_copy()


def s_prompt(prompt: str, sentinel: str | None = None, subfolder_masks: bool = False):
    def setup(ctx: Ctx) -> None:
        scene = ctx.scene()
        rename_class(scene, "red ball", prompt.format(case=ctx.dir))
        if sentinel:
            ctx.sentinel(sentinel)
        if subfolder_masks:  # make segmentations/<view>/red/blue ball.png exist, so a path join would succeed
            head, tail = prompt.split("/", 1)
            for view in annotated_views(scene):
                ctx.sentinel(str((view / head / f"{tail}.png").relative_to(ctx.dir)))
    return setup


def s_maskless_paths(ctx: Ctx) -> None:
    ctx.scene(masks=False)
    ctx.sentinel("outside/passwd.png")
    (ctx.dir / "prompts.txt").write_text("\n".join(["../../images/00", "/etc/passwd", "red/blue ball",
                                                     "../../../outside/passwd", f"{ctx.dir}/outside/passwd",
                                                     "blue box"]) + "\n")


def s_query_paths(ctx: Ctx) -> None:
    ctx.run_copy()
    ctx.sentinel("outside/passwd.png")


def s_classes_bytes(data: bytes):
    def setup(ctx: Ctx) -> None:
        write_classes(ctx.scene(), data)
    return setup


def s_classes_file_differs(ctx: Ctx) -> None:
    ctx.scene()
    (ctx.dir / "my_classes.txt").write_text("\n".join(["a red ball", "a blue box", "a yellow cone", "a green cylinder",
                                                       "a purple box", "the floor", "the wall"]) + "\n")


def s_poses(kind: str):
    def setup(ctx: Ctx) -> None:
        scene = ctx.scene()
        path = scene / "poses_bounds.npy"
        data = np.load(path)
        if kind == "text":
            path.write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in data) + "\n")
        elif kind == "truncated":
            truncate(path, 0.6)
        elif kind == "nan":
            data[3, 5] = np.nan
            np.save(path, data)
        elif kind == "shape":
            np.save(path, data[:, :15])
        elif kind == "rows":
            np.save(path, data[:7])
        elif kind == "pickle":
            np.save(path, np.array([Payload(ctx.dir / "PWNED")] * 2, dtype=object), allow_pickle=True)
        elif kind == "empty":
            path.write_bytes(b"")
    return setup


def s_transforms(kind: str):
    def setup(ctx: Ctx) -> None:
        scene = ctx.scene()
        if kind == "invalid":
            to_transforms(scene)
            text = (scene / "transforms.json").read_text()
            (scene / "transforms.json").write_text(text[: len(text) // 2])  # cut mid-way: invalid JSON
        elif kind == "fewer":
            to_transforms(scene, n_frames=6)
        elif kind == "missing_image":
            to_transforms(scene)
            (scene / "images" / "04.png").rename(scene / "04.png.bak")
    return setup


def s_colmap(kind: str):
    def setup(ctx: Ctx) -> None:
        scene = ctx.scene()
        (scene / "poses_bounds.npy").unlink()
        model = scene / "sparse" / "0"
        model.mkdir(parents=True)
        if kind == "garbage":
            rng = np.random.default_rng(0)
            for name in ("cameras.bin", "images.bin", "points3D.bin"):
                (model / name).write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return setup


def s_images(kind: str):
    def setup(ctx: Ctx) -> None:
        from PIL import Image

        scene = ctx.scene()
        images = scene / "images"
        if kind == "truncated_jpeg":
            for png in sorted(images.glob("*.png")):
                Image.open(png).convert("RGB").save(png.with_suffix(".jpg"), quality=90)
                png.unlink()
            truncate(images / "03.jpg", 0.4)
        elif kind == "bomb":
            (images / "05.png").write_bytes(bomb_png())
        elif kind == "zero_bytes":
            (images / "02.png").write_bytes(b"")
        elif kind == "other_size":
            Image.open(images / "06.png").resize((80, 60)).save(images / "06.png")
        elif kind == "empty_folder":
            for p in images.iterdir():
                p.unlink()
        elif kind == "no_folder":
            shutil.rmtree(images)
    return setup


def s_mask(kind: str):
    def setup(ctx: Ctx) -> None:
        from PIL import Image

        scene = ctx.scene()
        mask = scene / "segmentations" / "02" / "blue box.png"
        if kind == "wrong_size":
            Image.open(mask).resize((32, 24)).save(mask)
        elif kind == "not_png":
            mask.write_text("this is not an image\n")
    return setup


def s_weights(kind: str):
    def setup(ctx: Ctx) -> None:
        ctx.scene()
        w = ctx.dir / "weights"
        w.mkdir()
        if kind == "html":
            (w / "open_clip_pytorch_model.bin").write_text(
                "<!DOCTYPE html>\n<html><head><title>laion/CLIP-ViT-B-16 at main</title></head>"
                "<body><h1>Hugging Face</h1><p>Sign in to download</p></body></html>\n")
        elif kind == "lfs_text":
            (w / "model.safetensors").write_text(
                "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 598641023\n")
        elif kind == "truncated":
            truncate(small_safetensors(w / "model.safetensors"), 0.5)
        elif kind == "wrong_model":
            small_safetensors(w / "model.safetensors")
        elif kind == "pickle":
            import torch
            torch.save({"state_dict": Payload(ctx.dir / "PWNED")}, w / "model.pt")
        elif kind == "plain_pickle":
            import pickle
            (w / "model.pth").write_bytes(pickle.dumps(Payload(ctx.dir / "PWNED")))
    return setup


def s_checkpoint(kind: str):
    def setup(ctx: Ctx) -> None:
        run = ctx.run_copy()
        if kind == "truncated":
            truncate(run / "segment" / "checkpoint.safetensors", 0.5)
        elif kind == "zero":
            (run / "segment" / "checkpoint.safetensors").write_bytes(b"")
        elif kind == "missing":
            (run / "segment" / "checkpoint.safetensors").unlink()
        elif kind == "edited":  # swap the two dimensions of a 2-D tensor's shape: same bytes, wrong shape
            path = run / "reconstruct" / "checkpoint.safetensors"
            data = bytearray(path.read_bytes())
            n = struct.unpack("<Q", data[:8])[0]
            header = json.loads(data[8:8 + n])
            name = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2
                        and v["shape"][0] != v["shape"][1])
            header[name]["shape"] = header[name]["shape"][::-1]
            ctx.info["edited_tensor"] = name
            text = json.dumps(header, separators=(",", ":")).encode()
            assert len(text) <= n
            data[8:8 + n] = text + b" " * (n - len(text))
            path.write_bytes(bytes(data))
    return setup


def s_feature_cache(ctx: Ctx) -> None:
    run = ctx.run_copy()
    cache = run / "segment" / "feature_cache"
    truncate(next(iter(sorted(cache.glob("*.npy")))), 0.3)


def s_feature_cache_json(ctx: Ctx) -> None:
    run = ctx.run_copy()
    cache = run / "segment" / "feature_cache"
    (cache / "cache.json").write_text('{"key": {"iteration": ')
    for npy in cache.glob("*.npy"):
        npy.write_bytes(b"\x93NUMPY garbage")


def s_live_lock(ctx: Ctx) -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    ctx.cleanups.append(lambda: (holder.kill(), holder.wait()))
    ctx.info["holder_pid"] = holder.pid
    write_lock(ctx.dir / "O", holder.pid, purpose="x")


def s_stale_lock(ctx: Ctx) -> None:
    run = ctx.run_copy()
    pid = dead_pid()
    ctx.info["dead_pid"] = pid
    write_lock(run, pid, purpose="ovs3d run")


def s_garbage_lock(ctx: Ctx) -> None:
    ctx.run_copy()
    (ctx.dir / "O" / ".ovs3d.lock").write_bytes(b"\x00\x00garbage")


def s_foreign_lock(ctx: Ctx) -> None:
    ctx.run_copy()
    write_lock(ctx.dir / "O", 4242, host="render-node-07", purpose="ovs3d run")


def s_kill9(ctx: Ctx) -> None:
    """Start the same run the fixture made, kill -9 the process group during stage 1 (past the first
    stage-1 checkpoint), then let the case rerun it."""
    argv = [*CLI, *RUN, "--data", str(ctx.fx.scene), "--out", "O"]
    proc, chunks, sent = stream_until(argv, ctx.dir, STAGE1_PROGRESS, 50, signal.SIGKILL, 120, group=True)
    ctx.info.update(killed=sent, killed_rc=proc.returncode,
                    killed_files=sorted(str(p.relative_to(ctx.dir)) for p in (ctx.dir / "O").rglob("*") if p.is_file()))


def s_out_is_file(ctx: Ctx) -> None:
    ctx.scene()
    (ctx.dir / "results.txt").write_text("my notes: do not delete\n")


def s_nonempty_folder(ctx: Ctx) -> None:
    (ctx.dir / "mine").mkdir()
    (ctx.dir / "mine" / "thesis.tex").write_text("\\documentclass{article}\n")


def s_readonly(ctx: Ctx) -> None:
    ctx.scene()
    (ctx.dir / "ro").mkdir()
    if os.geteuid() != 0:
        os.chmod(ctx.dir / "ro", 0o555)
        ctx.cleanups.append(lambda: os.chmod(ctx.dir / "ro", 0o755))
    (ctx.dir / "somefile").write_text("a file, not a folder\n")


# --- checks

def c_not_pwned(ctx: Ctx, r: dict) -> str | None:
    return "the pickle payload ran (PWNED exists)" if (ctx.dir / "PWNED").exists() else None


def c_not_said_missing(ctx: Ctx, r: dict) -> str | None:
    """The path exists (it is a file): a message saying it does not exist misleads."""
    return "the message says the path does not exist, but it is an existing file" \
        if "does not exist" in r["message"] else None


def c_pid(ctx: Ctx, r: dict) -> str | None:
    pid = str(ctx.info.get("holder_pid"))
    return None if pid in r["stderr_tail"] else f"the message does not name the holder PID {pid}"


def c_took_over(ctx: Ctx, r: dict) -> str | None:
    text = r["stderr_tail"] + r["stdout_tail"]
    if "took over" not in text:
        return "no message about taking over the stale lock"
    return "the lock file was left behind" if (ctx.dir / "O" / ".ovs3d.lock").exists() else None


def miou(path: Path) -> float | None:
    try:
        return json.loads(path.read_text())["3dovs"]["miou"]
    except (OSError, ValueError, KeyError):
        return None


def psnr(path: Path) -> float | None:
    try:
        return json.loads(path.read_text()).get("psnr")
    except (OSError, ValueError):
        return None


def c_resumed_same(ctx: Ctx, r: dict) -> str | None:
    if not ctx.info.get("killed"):
        return "the first run was not killed during stage 1 (it ended first)"
    ref, got = miou(ctx.fx.run / "test" / "metrics.json"), miou(ctx.dir / "O" / "test" / "metrics.json")
    ctx.info.update(miou_uninterrupted=ref, miou_resumed=got,
                    psnr_uninterrupted=psnr(ctx.fx.run / "reconstruct" / "metrics.json"),
                    psnr_resumed=psnr(ctx.dir / "O" / "reconstruct" / "metrics.json"))
    if "resum" not in r["stdout_tail"] + r["stderr_tail"]:
        return "the rerun did not say it resumed"
    return None if ref is not None and ref == got else f"3dovs mIoU differs: uninterrupted {ref}, resumed {got}"


def c_same_metrics_as_fixture(ctx: Ctx, r: dict) -> str | None:
    ref, got = miou(ctx.fx.run / "test" / "metrics.json"), miou(ctx.dir / "T" / "metrics.json")
    ctx.info.update(miou_fixture=ref, miou_here=got)
    return None if ref == got else f"mIoU {got} differs from the run's own test {ref}"


def c_moved_aside(ctx: Ctx, r: dict) -> str | None:
    return None if (ctx.dir / "O" / "segment.old-1" / "checkpoint.safetensors").is_file() else \
        "the previous segment outputs were not kept (no segment.old-1)"


def c_two_queries(ctx: Ctx, r: dict) -> str | None:
    pngs = sorted(p.name for p in (ctx.dir / "O" / "segment" / "query").glob("red_ball*_000.png"))
    ctx.info["query_pngs"] = pngs
    return None if len(pngs) == 2 else f"expected two distinct relevancy files, found {pngs}"


def c_query_plain_names(ctx: Ctx, r: dict) -> str | None:
    names = sorted(p.name for p in (ctx.dir / "Q").glob("*.png"))
    ctx.info["files"] = names[:8]
    return None if len(names) >= 4 else f"expected the query images in Q/, found {names}"


def c_long_prompt(ctx: Ctx, r: dict) -> str | None:
    if r["exit"] == 0:
        ctx.info["note"] = "the built-in encoder accepts a 300-word (> 77 CLIP tokens) prompt"
    return None


# --- the catalogue

P, LK, LATE, LAYER, UNCLEAR, LOSS, CLI_ = ("prompt as path", "lock / concurrent writers", "late check",
                                           "layer error (file, decoding, safetensors, pickle, PIL, OS)",
                                           "unclear message / silent acceptance", "data loss", "command line")
SCENE_RUN = [*RUN, "--data", "S", "--out", "O"]
CLIP_W = [*RUN, "--data", "S", "--out", "O", "--extract.clip.kind", "openclip"]
DINO_W = [*RUN, "--data", "S", "--out", "O", "--extract.dino.kind", "timm"]

CASES: list[Case] = [
    # prompts that look like paths
    Case("prompt_dotdot_images", P, SCENE_RUN, s_prompt("../../images/00"), mention=("classes.txt",),
         escape_if_accepted=True, note="segmentations/00/../../images/00.png is the scene's own first image"),
    Case("prompt_dotdot_outside", P, SCENE_RUN, s_prompt("../../../outside/passwd", "outside/passwd.png"),
         mention=("classes.txt",), escape_if_accepted=True),
    Case("prompt_absolute_sentinel", P, SCENE_RUN, s_prompt("{case}/outside/passwd", "outside/passwd.png"),
         mention=("classes.txt",), escape_if_accepted=True),
    Case("prompt_etc_passwd", P, SCENE_RUN, s_prompt("/etc/passwd"), mention=("classes.txt",),
         escape_if_accepted=True),
    Case("prompt_slash_masks_exist", P, SCENE_RUN, s_prompt("red/blue ball", subfolder_masks=True),
         mention=("classes.txt", "masks.json"), escape_if_accepted=True,
         note="segmentations/<view>/red/blue ball.png exists, so a path join would find it"),
    Case("prompt_300_words_in_classes", P, SCENE_RUN, s_prompt(LONG_PROMPT), mention=("classes.txt",)),
    Case("prompt_paths_no_masks", P, [*RUN, "--data", "S", "--out", "O", "--classes-file", "prompts.txt"],
         s_maskless_paths, expect="ok", preflight=False, write_roots=("O", "S/features"), timeout=150,
         note="a scene without masks: path-like prompts are plain text"),
    Case("query_path_texts", P, ["query", "--run", "O/segment", "--out", "Q", "--text", "../../images/00",
                                 "--text", "/etc/passwd", "--text", "../../../outside/passwd"],
         s_query_paths, expect="ok", preflight=False, write_roots=("Q", "O/segment/feature_cache"),
         check=c_query_plain_names),
    Case("query_300_words", P, ["query", "--run", "O/segment", "--out", "Q", "--text", LONG_PROMPT],
         s_runcopy, expect="any", preflight=False, check=c_long_prompt,
         note="> 77 CLIP tokens; CLIP would refuse it, the built-in encoder may not"),
    # class lists
    Case("classes_non_utf8", LAYER, SCENE_RUN,
         s_classes_bytes("\n".join(CLASSES[:-1] + ["café wall"]).encode("latin-1")), mention=("classes.txt",)),
    Case("classes_empty_line", UNCLEAR, SCENE_RUN,
         s_classes_bytes(("\n".join(CLASSES[:3]) + "\n\n" + "\n".join(CLASSES[3:]) + "\n").encode()),
         mention=("classes.txt", "line 4")),
    Case("classes_duplicate", UNCLEAR, SCENE_RUN,
         s_classes_bytes(("\n".join(CLASSES + ["blue box"]) + "\n").encode()), mention=("classes.txt", "blue box")),
    Case("classes_empty_file", UNCLEAR, SCENE_RUN, s_classes_bytes(b"\n\n"), mention=("classes.txt",)),
    Case("classes_control_char", UNCLEAR, SCENE_RUN,
         s_classes_bytes(("\n".join(CLASSES[:-1] + ["grey stone\x07wall"]) + "\n").encode()), mention=("classes.txt",)),
    Case("classes_file_wording_differs", LATE, [*SCENE_RUN, "--classes-file", "my_classes.txt"],
         s_classes_file_differs, mention=("classes",), note="must fail before extraction"),
    Case("classes_file_missing", LAYER, [*SCENE_RUN, "--classes-file", "classes.txt"], s_scene,
         mention=("classes.txt",)),
    # poses
    Case("poses_text_file", LAYER, SCENE_RUN, s_poses("text"), mention=("poses_bounds.npy",)),
    Case("poses_truncated", LAYER, SCENE_RUN, s_poses("truncated"), mention=("poses_bounds.npy",)),
    Case("poses_empty", LAYER, SCENE_RUN, s_poses("empty"), mention=("poses_bounds.npy",)),
    Case("poses_nan", UNCLEAR, SCENE_RUN, s_poses("nan"), mention=("poses_bounds.npy", "NaN")),
    Case("poses_wrong_shape", UNCLEAR, SCENE_RUN, s_poses("shape"), mention=("poses_bounds.npy", "17")),
    Case("poses_fewer_rows", UNCLEAR, SCENE_RUN, s_poses("rows"), mention=("poses_bounds.npy",)),
    Case("poses_pickled_objects", LAYER, SCENE_RUN, s_poses("pickle"), mention=("poses_bounds.npy",),
         check=c_not_pwned),
    Case("transforms_invalid_json", LAYER, SCENE_RUN, s_transforms("invalid"), mention=("transforms.json",)),
    Case("transforms_fewer_frames", UNCLEAR, SCENE_RUN, s_transforms("fewer"), mention=("transforms.json",)),
    Case("transforms_missing_image", LAYER, SCENE_RUN, s_transforms("missing_image"), mention=("04.png",)),
    Case("colmap_garbage", LAYER, SCENE_RUN, s_colmap("garbage"), mention=("sparse",)),
    Case("colmap_empty_folder", UNCLEAR, SCENE_RUN, s_colmap("empty"), mention=("sparse",)),
    # images and masks
    Case("image_truncated_jpeg", LAYER, SCENE_RUN, s_images("truncated_jpeg"), mention=("03.jpg",)),
    Case("image_decompression_bomb", LAYER, SCENE_RUN, s_images("bomb"), mention=("05.png",),
         note="a 200000 x 200000 1-bit PNG header, 100 bytes"),
    Case("image_zero_bytes", LAYER, SCENE_RUN, s_images("zero_bytes"), mention=("02.png",)),
    Case("image_other_size", UNCLEAR, SCENE_RUN, s_images("other_size"), mention=("06.png",)),
    Case("images_folder_empty", UNCLEAR, SCENE_RUN, s_images("empty_folder"), mention=("images",)),
    Case("images_folder_missing", UNCLEAR, SCENE_RUN, s_images("no_folder"), mention=("images",)),
    Case("mask_wrong_size", UNCLEAR, SCENE_RUN, s_mask("wrong_size"), mention=("blue box.png",)),
    Case("mask_not_an_image", LAYER, SCENE_RUN, s_mask("not_png"), mention=("blue box.png",)),
    Case("data_missing", UNCLEAR, [*RUN, "--data", "no_such_scene", "--out", "O"], None, mention=("no_such_scene",)),
    Case("data_is_a_file", UNCLEAR, [*RUN, "--data", "S/poses_bounds.npy", "--out", "O"], s_scene,
         mention=("poses_bounds.npy",), check=c_not_said_missing),
    # output folders
    Case("out_is_existing_file", LOSS, [*RUN, "--data", "S", "--out", "results.txt"], s_out_is_file,
         mention=("results.txt",)),
    Case("out_not_writable", LAYER, [*RUN, "--data", "S", "--out", "somefile/x"], s_readonly,
         mention=("somefile",), note="as root chmod does not stop writes: --out under a file instead"),
    Case("make_scene_nonempty_out", LOSS, ["make-scene", "--out", "mine", "--n-views", "8", "--width", "64",
                                           "--height", "48"], s_nonempty_folder, mention=("mine",)),
    Case("reconstruct_into_complete_run", LOSS, ["reconstruct", "--data", "{FS}", "--out", "O/reconstruct",
                                                 "--preset", "test"], s_runcopy, mention=("O/reconstruct",)),
    Case("segment_into_complete_run", LOSS, ["segment", "--run", "O/reconstruct", "--out", "O/segment",
                                             "--preset", "test", *ENC], s_runcopy, mention=("O/segment",)),
    Case("run_other_settings_same_out", LOSS, [*RUN, "--data", "{FS}", "--out", "O", "--segment.iterations", "8"],
         s_runcopy, expect="ok", preflight=False, protect=True, may_rewrite=("O/summary.json",), check=c_moved_aside,
         timeout=120, note="stale stage outputs must be moved aside, not deleted (summary.json is the latest run's)"),
    # weights files
    Case("clip_weights_html", LAYER, [*CLIP_W, "--extract.clip.weights", "weights/open_clip_pytorch_model.bin"],
         s_weights("html"), mention=("open_clip_pytorch_model.bin",)),
    Case("clip_weights_lfs_pointer", LAYER, [*CLIP_W, "--extract.clip.weights", "weights/model.safetensors"],
         s_weights("lfs_text"), mention=("model.safetensors",)),
    Case("clip_weights_truncated", LAYER, [*CLIP_W, "--extract.clip.weights", "weights/model.safetensors"],
         s_weights("truncated"), mention=("model.safetensors",)),
    Case("clip_weights_wrong_model", UNCLEAR, [*CLIP_W, "--extract.clip.weights", "weights/model.safetensors"],
         s_weights("wrong_model"), mention=("model.safetensors",)),
    Case("clip_weights_code_pickle", LAYER, [*CLIP_W, "--extract.clip.weights", "weights/model.pt"],
         s_weights("pickle"), mention=("model.pt",), check=c_not_pwned),
    Case("clip_weights_missing", LAYER, [*CLIP_W, "--extract.clip.weights", "weights/nope.safetensors"],
         s_weights("none"), mention=("nope.safetensors",)),
    Case("dino_weights_truncated", LATE, [*DINO_W, "--extract.dino.weights", "weights/model.safetensors"],
         s_weights("truncated"), mention=("model.safetensors",)),
    Case("dino_weights_code_pickle", LAYER, [*DINO_W, "--extract.dino.weights", "weights/model.pth"],
         s_weights("plain_pickle"), mention=("model.pth",), check=c_not_pwned),
    # existing runs
    Case("checkpoint_truncated", LAYER, ["test", "--run", "O/segment", "--out", "T", "--test.video-frames", "0"],
         s_checkpoint("truncated"), mention=("checkpoint.safetensors",)),
    Case("checkpoint_zero_bytes", LAYER, ["query", "--run", "O/segment", "--text", "ball"], s_checkpoint("zero"),
         mention=("checkpoint.safetensors",)),
    Case("checkpoint_missing", UNCLEAR, ["query", "--run", "O/segment", "--text", "ball"], s_checkpoint("missing"),
         mention=("checkpoint",)),
    Case("checkpoint_shape_edited", LAYER, ["render", "--run", "O/reconstruct", "--path", "dataset", "--out", "R"],
         s_checkpoint("edited"), mention=("checkpoint.safetensors",),
         note="two dimensions of one tensor's shape swapped in the header (same byte count)"),
    Case("query_stage1_folder", UNCLEAR, ["query", "--run", "O/reconstruct", "--text", "ball"], s_runcopy,
         mention=("O/reconstruct",)),
    Case("query_view_999", UNCLEAR, ["query", "--run", "O/segment", "--text", "ball", "--view", "999"], s_runcopy,
         mention=("999",)),
    Case("query_empty_text", UNCLEAR, ["query", "--run", "O/segment", "--text", ""], s_runcopy, mention=("--text",)),
    Case("query_no_text", UNCLEAR, ["query", "--run", "O/segment"], s_runcopy, mention=("--text",)),
    Case("query_punctuation_no_overwrite", LOSS, ["query", "--run", "O/segment", "--text", "red ball."], s_runcopy,
         expect="ok", preflight=False, protect=True, may_rewrite=("query/query.json",), check=c_two_queries,
         note="'red ball' was queried before (fixture); 'red ball.' must get its own files"),
    Case("query_damaged_npy_cache", LAYER, ["query", "--run", "O/segment", "--text", "ball"], s_feature_cache,
         expect="ok", preflight=False, may_rewrite=("feature_cache/", "query/query.json"),
         protect=True, note="a truncated cached view is rendered again; query.json is the last query's summary"),
    Case("query_damaged_cache_json", LAYER, ["query", "--run", "O/segment", "--text", "ball"], s_feature_cache_json,
         expect="ok", preflight=False, may_rewrite=("feature_cache/", "query/query.json"), protect=True),
    Case("test_other_cwd", UNCLEAR, ["test", "--run", "{FO}/segment", "--out", "T", "--test.video-frames", "0"],
         None, expect="ok", preflight=False, check=c_same_metrics_as_fixture,
         note="the run was made with relative paths in another working directory"),
    Case("test_negative_video_frames", UNCLEAR, ["test", "--run", "O/segment", "--out", "T", "--test.video-frames",
                                                 "-5"], s_runcopy, mention=("video-frames",)),
    # locks and interruptions
    Case("lock_stale_dead_pid", LK, [*RUN, "--data", "{FS}", "--out", "O"], s_stale_lock, expect="ok",
         preflight=False, check=c_took_over, timeout=120),
    Case("lock_live_holder", LK, [*RUN, "--data", "{FS}", "--out", "O"], s_live_lock, mention=(".ovs3d.lock",),
         check=c_pid),
    Case("lock_other_host", LK, [*RUN, "--data", "{FS}", "--out", "O"], s_foreign_lock,
         mention=("render-node-07",)),
    Case("lock_unreadable", LK, [*RUN, "--data", "{FS}", "--out", "O"], s_garbage_lock, expect="ok",
         preflight=False, check=c_took_over, timeout=120),
    Case("kill9_stage1_then_rerun", LK, [*RUN, "--data", "{FS}", "--out", "O"], s_kill9, expect="ok",
         preflight=False, check=c_resumed_same, timeout=180,
         note="setup: the same command killed with SIGKILL at stage-1 iteration 50; the case is the rerun"),
    Case("sigint_during_stage1", LK, [*RUN, "--data", "{FS}", "--out", "O"], None, expect="interrupt",
         preflight=False, signal_at=(signal.SIGINT, 20), mention=("resume",)),
    # command line
    Case("preset_fast", CLI_, [*SCENE_RUN, "--preset", "fast"], s_scene, mention=("fast",)),
    Case("unknown_flag", CLI_, [*RUN, "--data", "S", "--outt", "O"], s_scene, expect="usage", mention=("--outt",)),
    Case("unknown_verb", CLI_, ["trian", "--data", "S"], None, expect="usage", mention=("trian",)),
    Case("threads_not_a_number", CLI_, [*SCENE_RUN, "--threads", "two"], s_scene, expect="usage",
         mention=("two",)),
    Case("missing_required_data", CLI_, [*RUN, "--out", "O"], None, expect="usage", mention=("--data",)),
    Case("device_cuda_absent", UNCLEAR, [*SCENE_RUN, "--device", "cuda"], s_scene, expect="any",
         note="on a machine without CUDA this must be a clear error; with CUDA it runs"),
    Case("negative_segment_iterations", LATE, [*SCENE_RUN, "--segment.iterations", "-3"], s_scene,
         mention=("iterations",), timeout=120),
]


# ----------------------------------------------------------------------------------------------- runner

def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> SHA-1 of every regular file under ``folder`` (links not followed)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            if p.is_file() and not p.is_symlink():
                try:
                    out[str(p.relative_to(folder))] = hashlib.sha1(p.read_bytes()).hexdigest()
                except OSError:
                    out[str(p.relative_to(folder))] = "unreadable"
    return out


def reset_atime(paths: list[Path]) -> dict[Path, float]:
    stamps = {}
    for p in paths:
        st = p.stat()
        os.utime(p, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))
        stamps[p] = p.stat().st_atime_ns
    return stamps


def atime_works(folder: Path) -> bool:
    probe = folder / "atime-probe"
    probe.write_text("x")
    before = reset_atime([probe])[probe]
    probe.read_text()
    return probe.stat().st_atime_ns != before


def message_line(stderr: str) -> str:
    """The last line of stderr with text in it; for the parser's boxed panel (it ends with a 'see --help'
    line) its first two lines of text instead."""
    lines = stderr.replace("\r", "\n").splitlines()
    if stderr.lstrip().startswith("╭"):
        inner = [t for t in (line.strip(" │╭╮╰╯─┃━\t") for line in lines[1:]) if t]
        return " ".join(inner[:2])
    for line in reversed(lines):
        text = line.strip(" │╭╮╰╯─┃━\t")
        if text:
            return text
    return ""


def run_case(case: Case, fx: Fixtures, work: Path, atime_ok: bool) -> dict:
    folder = work / case.id
    folder.mkdir()
    ctx = Ctx(folder, fx)
    fmt = {"FS": str(fx.scene), "FO": str(fx.run)}
    argv = [*CLI, *[a.replace("{FS}", fmt["FS"]).replace("{FO}", fmt["FO"]) for a in case.args]]
    result: dict = {"id": case.id, "class": case.cls, "preflight": case.preflight, "expect": case.expect,
                    "command": " ".join(["python3 -m ovs3d.cli.main", *[shlex_quote(a) for a in argv[3:]]]),
                    "note": case.note}
    try:
        if case.setup:
            case.setup(ctx)
        before = snapshot(folder)
        stamps = reset_atime(ctx.sentinels) if atime_ok else {}
        start = time.perf_counter()
        if case.signal_at:
            sig, at = case.signal_at
            proc, chunks, sent = stream_until(argv, folder, STAGE1_PROGRESS, at, sig, case.timeout, group=False)
            rc, stderr, stdout, timed_out = proc.returncode, "".join(chunks), proc.out_text, False
            ctx.info["signal_sent"] = sent
        else:
            try:
                done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=case.timeout,
                                      errors="replace", start_new_session=True)
                rc, stderr, stdout, timed_out = done.returncode, done.stderr, done.stdout, False
            except subprocess.TimeoutExpired as exc:
                rc, timed_out = None, True
                stderr = exc.stderr.decode("utf-8", "replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
                stdout = exc.stdout.decode("utf-8", "replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        seconds = time.perf_counter() - start
        read_sentinels = [str(p.relative_to(folder)) for p, t in stamps.items() if p.stat().st_atime_ns != t]
        after = snapshot(folder)
    finally:
        for cleanup in ctx.cleanups:
            cleanup()
    new = sorted(set(after) - set(before))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    removed = sorted(set(before) - set(after))
    new_hashes = {after[k] for k in new}
    # a pre-existing file whose old content now lives at a new path was moved aside (kept), not lost
    moved = [k for k in removed + changed if before[k] in new_hashes]
    lost = [k for k in removed if k not in moved]
    changed = [k for k in changed if k not in moved]
    prefix = f"{folder}/"
    result.update(exit=rc, timed_out=timed_out, seconds=round(seconds, 2),
                  message=message_line(stderr).replace(prefix, ""), stderr_full=stderr,
                  traceback="Traceback" in stderr, stderr_tail=stderr[-1500:].replace(prefix, ""),
                  stdout_tail=stdout[-1500:].replace(prefix, ""),
                  new_files=len(new), new_sample=[k for k in new if "/tb/" not in k][:12],
                  changed_preexisting=changed, removed_preexisting=lost, moved_preexisting=moved,
                  sentinels_read=read_sentinels)
    # data loss: a failing command changed or removed something that was there (a protected case: any command)
    failing = rc != 0
    touched = [k for k in changed + lost if not any(s in k for s in case.may_rewrite)]
    result["data_loss"] = bool(touched) and (failing or case.protect)
    result["lost_files"] = touched if result["data_loss"] else []
    outside = []
    if case.write_roots is not None:
        outside = [k for k in new if not any(k == r or k.startswith(r + "/") for r in case.write_roots)]
    result["escape"] = bool(read_sentinels) or bool(outside) or (case.escape_if_accepted and rc == 0)
    result["written_outside"] = outside[:10]
    result["pwned"] = (folder / "PWNED").exists()
    reasons = verdict_reasons(case, result, ctx)
    result["info"] = ctx.info
    result["slow_preflight"] = case.preflight and (timed_out or seconds >= PREFLIGHT_LIMIT_S)
    if result["slow_preflight"]:
        reasons.append(f"a preflight error took {seconds:.1f} s (limit {PREFLIGHT_LIMIT_S:.0f} s)")
    result.pop("stderr_full")
    result["verdict"] = "FAIL" if reasons else ("NOTE" if ctx.info.get("note") else "PASS")
    result["reasons"] = reasons
    return result


def verdict_reasons(case: Case, r: dict, ctx: Ctx) -> list[str]:
    reasons = []
    rc, msg, text = r["exit"], r["message"], r["stderr_tail"]
    if r["timed_out"]:
        reasons.append(f"no exit within {case.timeout:.0f} s")
    if r["traceback"]:
        reasons.append("a traceback on stderr")
    if rc == 1 or "internal error" in text:
        reasons.append("an internal error (exit 1) instead of a clear message")
    if case.expect == "error":
        if rc == 0:
            reasons.append("accepted silently (exit 0)")
        elif rc != 2:
            reasons.append(f"exit {rc}, not 2")
        if rc == 2 and not ERROR_FORM.match(msg):
            reasons.append("the message is not one line 'ovs3d: error: <path>: <problem>. Fix: <fix>'")
    elif case.expect == "usage" and rc != 2:
        reasons.append(f"exit {rc}, not 2 (a usage error)")
    elif case.expect == "ok" and rc != 0:
        reasons.append(f"exit {rc}, not 0")
    elif case.expect == "interrupt" and rc != 130:
        reasons.append(f"exit {rc}, not 130 after the interruption")
    elif case.expect == "any" and rc not in (0, 2):
        reasons.append(f"exit {rc}")
    if case.expect == "any" and rc == 2 and not ERROR_FORM.match(msg):
        reasons.append("the message is not one line 'ovs3d: error: <path>: <problem>. Fix: <fix>'")
    if rc != 0 and case.mention:
        haystack = r["stderr_full"] if case.expect == "usage" else msg
        missing = [m for m in case.mention if m not in haystack]
        if missing:
            reasons.append(f"the message does not name {missing}")
    if r["data_loss"]:
        reasons.append("data loss: " + ", ".join(r["lost_files"][:5]))
    if r["escape"]:
        why = r["sentinels_read"] or r["written_outside"] or ["the path-like prompt was accepted on a scene with masks"]
        reasons.append(f"path escape: {why}")
    if r["pwned"]:
        reasons.append("the pickle payload was executed")
    if case.check:
        extra = case.check(ctx, r)
        if extra:
            reasons.append(extra)
    return reasons


def shlex_quote(arg: str) -> str:
    import shlex

    if len(arg) > 60:
        arg = arg[:40] + f"...<{len(arg)} chars>"
    return shlex.quote(arg)


def print_table(rows: list[dict]) -> None:
    header = f"{'id':32} {'pre':3} {'exit':>4} {'secs':>6} {'TB':2} {'verdict':7} message"
    print(header)
    print("-" * len(header))
    for r in rows:
        msg = r["message"] if len(r["message"]) <= 100 else r["message"][:97] + "..."
        print(f"{r['id']:32} {'yes' if r['preflight'] else 'no':3} {str(r['exit']):>4} {r['seconds']:6.1f} "
              f"{'TB' if r['traceback'] else '':2} {r['verdict']:7} {msg}")
        for reason in r["reasons"]:
            print(f"{'':32}   -> {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated case ids to run (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (their path is printed)")
    args = parser.parse_args()
    chosen = [c for c in CASES if not args.only or c.id in args.only.split(",")]
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ovs3d-bad-inputs-"))
    try:
        (work / "fixtures").mkdir()
        fx = build_fixtures(work / "fixtures")
        fixture_s = round(time.perf_counter() - t0, 1)
        fixture_hash = snapshot(fx.scene), snapshot(fx.run)
        atime_ok = atime_works(work)
        cases_dir = work / "cases"
        cases_dir.mkdir()
        rows = []
        for case in chosen:
            r = run_case(case, fx, cases_dir, atime_ok)
            rows.append(r)
            print(f"[{len(rows)}/{len(chosen)}] {r['id']}: exit {r['exit']} in {r['seconds']:.1f} s: {r['verdict']}",
                  flush=True)
        # the fixture run is read by many cases; apart from its scene's feature cache (shared by design)
        # and the query outputs, nothing in it may change
        after_s, after_o = snapshot(fx.scene), snapshot(fx.run)
        fixture_changed = sorted([f"S/{k}" for k, v in fixture_hash[0].items() if after_s.get(k) != v] +
                                 [f"O/{k}" for k, v in fixture_hash[1].items() if after_o.get(k) != v])
    finally:
        if args.keep:
            print(f"bench: kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    runtime = round(time.perf_counter() - t0, 1)
    totals = {"cases": len(rows), "pass": sum(r["verdict"] == "PASS" for r in rows),
              "note": sum(r["verdict"] == "NOTE" for r in rows), "fail": sum(r["verdict"] == "FAIL" for r in rows),
              "tracebacks": sum(r["traceback"] for r in rows), "data_loss": sum(r["data_loss"] for r in rows),
              "path_escapes": sum(r["escape"] for r in rows), "pickles_executed": sum(r["pwned"] for r in rows),
              "slow_preflight_errors": sum(r["slow_preflight"] for r in rows),
              "preflight_cases": sum(r["preflight"] for r in rows),
              "max_preflight_seconds": max((r["seconds"] for r in rows if r["preflight"]), default=0.0)}
    targets = {"tracebacks": 0, "data_loss": 0, "path_escapes": 0, "pickles_executed": 0, "slow_preflight_errors": 0}
    met = {k: totals[k] == v for k, v in targets.items()}
    print()
    print_table(rows)
    print()
    print("totals: " + ", ".join(f"{k} {v}" for k, v in totals.items()))
    print("targets: " + ", ".join(f"{k} = 0: {'met' if ok else 'MISSED'}" for k, ok in met.items()))
    print(f"fixtures changed by the cases: {fixture_changed or 'none'}; atime sentinels "
          f"{'work' if atime_ok else 'unavailable (noatime mount)'}; runtime {runtime} s (fixtures {fixture_s} s)")
    write_result("bad_inputs", {
        "runtime_s": runtime, "fixture_seconds": fixture_s, "totals": totals, "targets": targets, "targets_met": met,
        "fixture_files_changed": fixture_changed, "atime_sentinels": atime_ok, "cpu_flags": cpu_flags(),
        "cases": rows})


if __name__ == "__main__":
    main()
