"""``process-data``: a folder of photos (or a video) -> a posed scene folder, with pycolmap on the CPU.

Steps: (video: extract frames with ffmpeg at ``fps``) -> copy the photos, EXIF orientation applied,
downsized so the long side is at most ``max_size`` -> SIFT features -> matching (exhaustive or
sequential) -> mapping (incremental or global) -> keep the largest reconstruction -> write the scene:

    images/            the registered photos (unregistered ones are named in the report and left out)
    sparse/0/          the COLMAP model (binary)
    poses_bounds.npy   LLFF rows [R | t | (H, W, f)] (down, right, back axes) + near/far, the 0.1 / 99.9
                       percentiles of the depths of the sparse points each camera sees (as LLFF's imgs2poses)
    transforms.json    nerfstudio convention (OpenGL axes), the same poses, ``near``/``far`` per frame
    process_data.json  the report: registered / unregistered photos, detected scene type, seconds per step

All three pose files describe the same cameras; every loader normalises them the same way, so
``load_scene`` gives the same cameras whichever it reads. The scene is built in a temporary folder
beside ``out`` and renamed into place at the end: a failure leaves no half-written scene.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ovs3d.errors import InputError
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.images import list_images, open_image
from ovs3d.scene import colmap_sfm
from ovs3d.scene.colmap import colmap_to_ovs3d, point_depth_bounds
from ovs3d.scene.layout import detect_kind
from ovs3d.scene.nerfstudio import write_transforms

EXIF_ORIENTATION, EXIF_IFD, EXIF_FOCAL_35MM = 0x0112, 0x8769, 0xA405
ASPECT_TOLERANCE = 0.01
MIN_REGISTERED = 3


@dataclass
class ProcessOptions:
    """How photos become a posed scene."""

    matching: Literal["exhaustive", "sequential"] = "exhaustive"
    """Pairs to match: all pairs (robust, quadratic cost) or each photo with its next ones in name order
    (video frames, long sequences)."""
    mapper: Literal["incremental", "global"] = "incremental"
    """COLMAP's incremental mapper, or the global mapper (GLOMAP, faster on many photos)."""
    max_size: int = 1008
    """Long side of the copied photos, in pixels (never upscaled)."""
    min_registered_fraction: float = 0.5
    """Fail when fewer than this fraction of the photos (and fewer than 3) get a pose."""
    overwrite: bool = False
    """Replace an existing output folder."""


@dataclass
class ProcessReport:
    """What ``process_data`` did: counts, names and seconds per step."""

    out: str
    n_photos: int
    registered: list[str]
    unregistered: list[str]
    kind: str
    size: list[int]
    focal_px: float
    seconds: dict[str, float] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    pycolmap: str = ""


class Steps:
    """Numbered progress lines ``[i/n] what ... done in s``; the seconds are kept per step."""

    def __init__(self, total: int):
        self.total, self.index, self.seconds = total, 0, {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.index += 1
        print(f"[{self.index}/{self.total}] {name} ...", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)
        print(f"[{self.index}/{self.total}] {name}: done in {self.seconds[name]:.1f} s", flush=True)


def oriented_size(path: Path) -> tuple[int, int]:
    """(W, H) after the EXIF orientation is applied, from the header only."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            rotated = im.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except OSError as exc:
        raise InputError(path, f"cannot read the image header ({exc})", "replace or delete the file") from exc
    return (h, w) if rotated else (w, h)


def exif_focal_px(path: Path, size: tuple[int, int]) -> float | None:
    """Focal length in pixels from EXIF's 35 mm-equivalent focal (f35 mm over the 36 mm long side of
    the film): f = f35 * max(W, H) / 36; None when absent."""
    try:
        with Image.open(path) as im:
            f35 = im.getexif().get_ifd(EXIF_IFD).get(EXIF_FOCAL_35MM)
    except OSError:
        return None
    return float(f35) * max(size) / 36.0 if f35 else None


def target_size(sizes: dict[Path, tuple[int, int]], max_size: int) -> tuple[int, int]:
    """One (W, H) for all photos: they must share an aspect ratio; the smallest photo sets the size,
    scaled so the long side is at most ``max_size``."""
    first_path, first = next(iter(sizes.items()))
    for path, (w, h) in sizes.items():
        if abs(w / h - first[0] / first[1]) > ASPECT_TOLERANCE * first[0] / first[1]:
            raise InputError(path, f"the photo is {w}x{h} but {first_path.name} is {first[0]}x{first[1]} "
                             "(another aspect ratio or orientation)",
                             "use photos of one shape (all portrait or all landscape, same camera setting)")
    w, h = min(sizes.values(), key=lambda s: s[0] * s[1])
    scale = min(1.0, max_size / max(w, h))
    return max(1, round(w * scale)), max(1, round(h * scale))


def output_name(path: Path) -> str:
    """JPEG and PNG keep their name; other formats are stored as PNG."""
    return path.name if path.suffix.lower() in (".jpg", ".jpeg", ".png") else path.stem + ".png"


def copy_photos(paths: list[Path], dest: Path, size: tuple[int, int]) -> list[str]:
    """Decode each photo, apply its EXIF orientation, resize to ``size`` (Lanczos), save without EXIF."""
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for path in tqdm(paths, desc="copying photos", unit="photo"):
        name = output_name(path)
        im = open_image(path).convert("RGB")
        if im.size != size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        im.save(dest / name, quality=95) if name.lower().endswith((".jpg", ".jpeg")) else im.save(dest / name)
        names.append(name)
    return names


def extract_video_frames(video: Path, fps: float, dest: Path) -> list[Path]:
    """Frames of ``video`` sampled at ``fps`` per second, as ``frame_00001.png`` ... (ffmpeg from imageio-ffmpeg)."""
    import imageio_ffmpeg

    dest.mkdir(parents=True, exist_ok=True)
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(video), "-vf", f"fps={fps}",
               str(dest / "frame_%05d.png")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise InputError(video, f"ffmpeg could not read the video ({result.stderr.strip()[-300:]})",
                         "pass a readable video file (mp4, mov, ...)")
    return list_images(dest)


def llff_rows(c2w: np.ndarray, bounds: np.ndarray, size: tuple[int, int], focal: float) -> np.ndarray:
    """[N, 17] ``poses_bounds.npy`` rows: ovs3d c2w (right, up, back) -> LLFF (down, right, back) =
    [-c1, c0, c2, t], the column (H, W, f) appended, flattened row-major, then near and far."""
    llff = np.concatenate([-c2w[:, :, 1:2], c2w[:, :, 0:1], c2w[:, :, 2:4]], axis=2)
    hwf = np.broadcast_to(np.array([size[1], size[0], focal], dtype=np.float64)[None, :, None], (len(c2w), 3, 1))
    return np.concatenate([np.concatenate([llff, hwf], axis=2).reshape(-1, 15), bounds], axis=1)


def check_inputs(images: Path | None, video: Path | None, fps: float, out: Path, options: ProcessOptions) -> None:
    """Every input check that can fail before any long work starts."""
    if (images is None) == (video is None):
        raise InputError(None, "give exactly one of --images DIR and --video FILE", "pass one input")
    if video is not None:
        if not video.is_file():
            raise InputError(video, "the video file does not exist", "pass the path of a video file")
        if fps <= 0:
            raise InputError(video, f"--fps must be positive (got {fps})", "pass e.g. --fps 2")
    if options.max_size < 32:
        raise InputError(None, f"--max-size {options.max_size} is too small for feature matching", "use >= 256")
    if out.exists() and any(out.iterdir()) and not options.overwrite:
        raise InputError(out, "the output folder exists and is not empty",
                         "choose another --out, delete it, or pass --overwrite")
    if out.resolve() == (images.resolve() if images is not None else None) or (
            images is not None and images.resolve() in out.resolve().parents):
        raise InputError(out, "the output folder is the photos' folder or inside it", "choose another --out")


def check_count(photos: list[Path], source: Path) -> None:
    if len(photos) < MIN_REGISTERED:
        raise InputError(source, f"{len(photos)} photo(s); structure from motion needs at least {MIN_REGISTERED}",
                         "add more overlapping photos of the scene (or a higher --fps for a video)")


def register_or_fail(names: list[str], registered: set[str], image_dir: Path, options: ProcessOptions) -> list[str]:
    """The unregistered names; an InputError when too few photos got a pose."""
    unregistered = [n for n in names if n not in registered]
    needed = max(MIN_REGISTERED, math.ceil(options.min_registered_fraction * len(names)))
    print(f"registered {len(registered)} of {len(names)} photos"
          + (f"; not registered: {', '.join(unregistered)}" if unregistered else ""), flush=True)
    if len(registered) < needed:
        hint = "use --matching exhaustive, " if options.matching == "sequential" else ""
        raise InputError(image_dir, f"only {len(registered)} of {len(names)} photos could be posed (need {needed})"
                         + (f"; not registered: {', '.join(unregistered[:20])}" if unregistered else ""),
                         f"{hint}take more photos with large overlap (each scene point in 3+ photos), avoid "
                         "blur and textureless or moving subjects, or raise --max-size")
    return unregistered


def process_data(out: str | Path, images: str | Path | None = None, video: str | Path | None = None,
                 fps: float = 2.0, options: ProcessOptions | None = None) -> ProcessReport:
    """Photos (``images``) or a ``video`` -> the scene folder ``out`` (see the module docstring)."""
    options = options or ProcessOptions()
    out = Path(out)
    images = Path(images) if images is not None else None
    video = Path(video) if video is not None else None
    check_inputs(images, video, fps, out, options)
    photos = list_images(images) if images is not None else []
    if images is not None:
        check_count(photos, images)
    steps = Steps(6 if video is not None else 5)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    build.chmod(0o777 & ~umask)
    scratch = Path(tempfile.mkdtemp(prefix="ovs3d-sfm-"))
    try:
        if video is not None:
            with steps.step(f"extracting frames at {fps} per second"):
                photos = extract_video_frames(video, fps, scratch / "frames")
            print(f"{len(photos)} frames", flush=True)
            check_count(photos, video)
        sizes = {p: oriented_size(p) for p in photos}
        size = target_size(sizes, options.max_size)
        focal = exif_focal_px(photos[0], sizes[photos[0]])
        focal = focal * size[0] / sizes[photos[0]][0] if focal else None
        image_dir = build / "images"
        with steps.step(f"copying {len(photos)} photos at {size[0]}x{size[1]}"):
            names = copy_photos(photos, image_dir, size)
        if len(set(names)) != len(names):
            raise InputError(images, "two photos differ only by their extension", "rename one of them")
        database = scratch / "database.db"
        with colmap_sfm.quiet_logs():
            with steps.step("extracting features"):
                colmap_sfm.extract_features(database, image_dir, focal, size)
            with steps.step(f"matching features ({options.matching})"):
                colmap_sfm.match_features(database, options.matching)
            with steps.step(f"mapping ({options.mapper})"):
                bar = tqdm(total=len(names), desc="registered", unit="photo")
                n_reg = colmap_sfm.map_images(database, image_dir, scratch / "mapper", options.mapper,
                                              build / "sparse" / "0", on_registered=lambda: bar.update(1))
                bar.n = n_reg
                bar.close()
        with steps.step("writing poses"):
            model = colmap_sfm.read_model(build / "sparse" / "0") if n_reg else None
            unregistered = register_or_fail(names, set(model.names) if model else set(), image_dir, options)
            for name in unregistered:
                (image_dir / name).unlink()
            report = write_poses(build, model, size, len(names), unregistered, options)
        report.out = str(out)
        report.seconds = steps.seconds
        write_json_atomic(build / "process_data.json", asdict(report))
        replace_folder(build, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)
    print(f"scene written to {out}: {len(report.registered)} posed photos, scene type {report.kind} "
          "(detected from the camera layout; it decides the ray space: ndc for forward-facing, contracted for 360, box for 360 with masks/)", flush=True)
    return report


def write_poses(build: Path, model: colmap_sfm.SparseModel, size: tuple[int, int], n_photos: int,
                unregistered: list[str], options: ProcessOptions) -> ProcessReport:
    """``poses_bounds.npy`` and ``transforms.json`` from the model, in the model's world frame."""
    bounds = point_depth_bounds(model, build / "sparse" / "0")
    c2w = colmap_to_ovs3d(model.cam_from_world)
    focal = float(model.fx[0])
    np.save(build / "poses_bounds.npy", llff_rows(c2w, bounds, size, focal))
    intrinsics = np.stack([model.fx, model.fy, model.cx, model.cy], axis=1)
    write_transforms(build / "transforms.json", [build / "images" / n for n in model.names], c2w, intrinsics,
                     size, bounds)
    return ProcessReport(out="", n_photos=n_photos, registered=list(model.names), unregistered=unregistered,
                         kind=detect_kind(torch.from_numpy(c2w)), size=list(size), focal_px=focal,
                         options=asdict(options), pycolmap=colmap_sfm.pycolmap_version())


def replace_folder(build: Path, out: Path) -> None:
    """Move the finished ``build`` folder to ``out`` (an existing ``out`` is replaced only at the end)."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(build, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build, out)
