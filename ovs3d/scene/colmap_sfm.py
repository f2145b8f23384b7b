"""Every call into pycolmap lives here: reading a COLMAP model, and structure from motion on the CPU.

Tested with pycolmap 4.2 (the range pinned in pyproject.toml is ``>=4.0,<5``: the 4.x API with
``Image.cam_from_world()``, ``extract_features(..., extraction_options=)`` and ``global_mapping``).
The rest of ovs3d sees plain numpy arrays in COLMAP's convention (``SparseModel``) and never imports
pycolmap, so a pycolmap API change is fixed in this one file.

COLMAP's convention: ``cam_from_world`` maps world points into the camera frame, whose axes are
(right, down, forward); pixel centres sit at index + 0.5, as in ovs3d.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from ovs3d.errors import InputError, excerpt, shown

PINHOLE_MODELS = ("SIMPLE_PINHOLE", "PINHOLE")
SIMPLE_MODELS = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "SIMPLE_RADIAL_FISHEYE", "RADIAL", "RADIAL_FISHEYE")


def import_pycolmap():
    """pycolmap, or an InputError naming the install command when it is missing or too old."""
    try:
        import pycolmap
    except ImportError as exc:
        raise InputError(None, f"pycolmap is not installed ({exc})", "pip install 'pycolmap>=4.0,<5'") from exc
    major = int(str(pycolmap.__version__).split(".")[0])
    if major != 4:
        raise InputError(None, f"pycolmap {pycolmap.__version__} is installed; ovs3d needs the 4.x API",
                         "pip install 'pycolmap>=4.0,<5'")
    return pycolmap


@dataclass
class SparseModel:
    """A registered COLMAP reconstruction as arrays, images sorted by name.

    Attributes:
        names: the N image names (paths relative to the image folder).
        cam_from_world: [N, 3, 4] world-to-camera [R | t] in COLMAP axes (right, down, forward).
        fx, fy, cx, cy: [N] pinhole intrinsics in pixels.
        sizes: [N, 2] image (width, height).
        models: the N camera model names; ``distortion``: [N] largest |distortion parameter| (0 for pinholes).
        points: [P, 3] sparse 3D points.
        observations: [M, 2] (view index, point index) pairs: point p was seen in view n.
    """

    names: list[str]
    cam_from_world: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    sizes: np.ndarray
    models: list[str]
    distortion: np.ndarray
    points: np.ndarray
    observations: np.ndarray


MODEL_FIX = "rerun the reconstruction (e.g. `ovs3d process-data`), or restore the model from a backup"
MAX_SIDE = 1 << 16


def camera_intrinsics(camera, source: Path | None = None) -> tuple[float, float, float, float, float]:
    """(fx, fy, cx, cy, largest |distortion|) of a pycolmap camera of any perspective model (the model's
    own focal-length, principal-point and extra-parameter indices)."""
    params = np.asarray(camera.params, dtype=np.float64)
    focal, principal = list(camera.focal_length_idxs()), list(camera.principal_point_idxs())
    if not focal or len(principal) != 2:
        raise InputError(source, f"camera {camera.camera_id} has the model {camera.model.name}, not a perspective "
                         "camera with a focal length", "reconstruct with a pinhole or radial camera model")
    fx, fy = params[focal[0]], params[focal[-1]]
    cx, cy = params[principal[0]], params[principal[1]]
    extra = params[list(camera.extra_params_idxs())]
    return fx, fy, cx, cy, float(np.abs(extra).max()) if extra.size else 0.0


class BinaryReader:
    """Bounds-checked little-endian reads of one COLMAP ``.bin`` file, for ``check_binary_model``."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read the model file ({exc.strerror or exc})", MODEL_FIX) from exc
        self.pos = 0

    def fail(self, problem: str) -> InputError:
        return InputError(self.path, f"the model file is damaged: {problem} (byte {self.pos} of "
                          f"{len(self.data)})", MODEL_FIX)

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.data):
            raise self.fail("it ends in the middle of a record (truncated)")
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def skip(self, n: int, record: int, what: str) -> None:
        if self.pos + n * record > len(self.data):
            raise self.fail(f"it lists {n} {what} but ends before them (truncated or not a COLMAP file)")
        self.pos += n * record

    def count(self, what: str, min_record: int) -> int:
        (n,) = self.take("Q")
        if n * min_record > len(self.data) - self.pos:
            raise self.fail(f"it claims {n} {what}, more than the file can hold (truncated or not a COLMAP file)")
        return n

    def name(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise self.fail("an image name is not terminated (truncated)")
        raw = self.data[self.pos:end]
        self.pos = end + 1
        return raw.decode("utf-8", "surrogateescape")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} bytes follow the last record")


def camera_param_counts() -> dict[int, int]:
    """Number of parameters of each COLMAP camera model id, from pycolmap itself."""
    pycolmap = import_pycolmap()
    counts = {}
    for model in pycolmap.CameraModelId.__members__.values():
        if int(model) >= 0:
            counts[int(model)] = len(pycolmap.Camera.create_from_model_id(1, model, 1.0, 1, 1).params)
    return counts


def check_binary_model(path: Path) -> None:
    """Walk the records of a binary COLMAP model (cameras, images, points3D, and rigs / frames when present)
    exactly as COLMAP lays them out, so that a truncated, padded or garbage file is an InputError here
    instead of a hang or silent garbage inside pycolmap's reader (which does not check for end of file)."""
    pycolmap = import_pycolmap()
    params = camera_param_counts()
    sensor_types = {int(t) for t in pycolmap.SensorType.__members__.values() if int(t) >= 0}

    r = BinaryReader(path / "cameras.bin")
    cameras = set()
    for _ in range(r.count("cameras", 24)):
        camera_id, model, width, height = r.take("IiQQ")
        if model not in params:
            raise r.fail(f"camera {camera_id} has the unknown camera model id {model}")
        if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
            raise r.fail(f"camera {camera_id} has the image size {width}x{height}")
        r.take(f"{params[model]}d")
        cameras.add(camera_id)
    r.done()

    r = BinaryReader(path / "images.bin")
    for _ in range(r.count("images", 4 + 56 + 4 + 1 + 8)):
        image_id, *_pose, camera_id = r.take("I7dI")
        name = r.name()
        if camera_id not in cameras:
            raise r.fail(f"image {shown(name)} refers to the camera {camera_id}, which cameras.bin does not hold")
        r.skip(r.count("2D points", 24), 24, "2D points")
    r.done()

    r = BinaryReader(path / "points3D.bin")
    for _ in range(r.count("3D points", 8 + 24 + 3 + 8 + 8)):
        r.take("Q3d3Bd")
        r.skip(r.count("track elements", 8), 8, "track elements")
    r.done()

    if (path / "rigs.bin").exists():
        r = BinaryReader(path / "rigs.bin")
        for _ in range(r.count("rigs", 8)):
            rig_id, n_sensors = r.take("II")
            if n_sensors * 8 > len(r.data) - r.pos:
                raise r.fail(f"rig {rig_id} claims {n_sensors} sensors, more than the file can hold")
            for index in range(n_sensors):
                sensor_type, _sensor_id = r.take("iI")
                if sensor_type not in sensor_types:
                    raise r.fail(f"rig {rig_id} has a sensor of the unknown type {sensor_type}")
                if index > 0:
                    (has_pose,) = r.take("B")
                    if has_pose not in (0, 1):
                        raise r.fail(f"rig {rig_id}: a sensor's pose flag is {has_pose}, not 0 or 1")
                    if has_pose:
                        r.take("7d")
        r.done()
    if (path / "frames.bin").exists():
        r = BinaryReader(path / "frames.bin")
        for _ in range(r.count("frames", 4 + 4 + 56 + 4)):
            r.take("II7d")
            (n_data,) = r.take("I")
            r.skip(n_data, 16, "frame data")
        r.done()


def model_files(path: Path) -> str:
    """Which format pycolmap reads from ``path`` (``bin`` or ``txt``), or InputError when neither is complete."""
    if not path.is_dir():
        raise InputError(path, "the COLMAP model folder does not exist", "point to a folder such as sparse/0")
    for suffix in ("bin", "txt"):
        if all((path / f"{name}.{suffix}").is_file() for name in ("cameras", "images", "points3D")):
            rigs, frames = (path / f"rigs.{suffix}").exists(), (path / f"frames.{suffix}").exists()
            if rigs != frames:
                have, lack = ("rigs", "frames") if rigs else ("frames", "rigs")
                raise InputError(path, f"the model has {have}.{suffix} but no {lack}.{suffix}",
                                 f"restore {lack}.{suffix}, or remove {have}.{suffix} too (COLMAP then assumes one "
                                 "camera per rig)")
            return suffix
    raise InputError(path, "the folder holds no complete COLMAP model", "point to a folder holding cameras.bin, "
                     "images.bin and points3D.bin (or the .txt files)")


def read_model(path: str | Path) -> SparseModel:
    """Read a COLMAP model folder (``cameras``/``images``/``points3D`` as .bin or .txt) through
    ``pycolmap.Reconstruction``; only registered images are kept. Binary files are checked record by
    record first (``check_binary_model``), and every value ovs3d uses is checked after reading."""
    path = Path(path)
    pycolmap = import_pycolmap()
    if model_files(path) == "bin":
        check_binary_model(path)
    try:
        recon = pycolmap.Reconstruction(str(path))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError/IndexError on unreadable models
        raise InputError(path, f"cannot read the COLMAP model ({excerpt(exc, 200)})",
                         "point to a folder holding cameras.bin, images.bin and points3D.bin (or .txt); "
                         + MODEL_FIX) from exc
    try:
        images = sorted((im for im in recon.images.values() if im.has_pose), key=lambda im: im.name)
        if not images:
            raise InputError(path, "the COLMAP model has no registered image", "rerun the reconstruction")
        row_of_image = {im.image_id: row for row, im in enumerate(images)}
        intr = np.array([camera_intrinsics(recon.cameras[im.camera_id], path) for im in images], dtype=np.float64)
        point_ids = sorted(recon.points3D.keys())
        points = np.array([recon.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
        obs = [(row_of_image[e.image_id], index) for index, pid in enumerate(point_ids)
               for e in recon.points3D[pid].track.elements if e.image_id in row_of_image]
        model = SparseModel(
            names=[im.name for im in images],
            cam_from_world=np.stack([im.cam_from_world().matrix() for im in images]),
            fx=intr[:, 0], fy=intr[:, 1], cx=intr[:, 2], cy=intr[:, 3], distortion=intr[:, 4],
            sizes=np.array([[recon.cameras[im.camera_id].width, recon.cameras[im.camera_id].height] for im in images]),
            models=[recon.cameras[im.camera_id].model.name for im in images],
            points=points, observations=np.array(obs, dtype=np.int64).reshape(-1, 2))
    except UnicodeDecodeError as exc:
        raise InputError(path, f"an image name of the model is not UTF-8 text ({excerpt(exc, 120)})",
                         "rename the images to UTF-8 names and rerun the reconstruction") from None
    check_model_values(model, path)
    return model


def check_model_values(model: SparseModel, path: Path) -> None:
    """The values ovs3d uses must be usable: finite poses and points, positive focal lengths, sane sizes."""
    def fail(problem: str, rows) -> InputError:
        names = ", ".join(shown(model.names[i]) for i in list(rows)[:5])
        return InputError(path, f"{problem} ({names})", MODEL_FIX)

    bad = np.flatnonzero(~np.isfinite(model.cam_from_world).all(axis=(1, 2)))
    if bad.size:
        raise fail("images with non-finite poses", bad)
    with np.errstate(all="ignore"):
        ok = np.isfinite(model.fx) & np.isfinite(model.fy) & (model.fx > 0) & (model.fy > 0)
        ok &= np.isfinite(model.cx) & np.isfinite(model.cy)
    bad = np.flatnonzero(~ok)
    if bad.size:
        raise fail("images whose camera has a non-positive or non-finite focal length or principal point", bad)
    bad = np.flatnonzero(~((model.sizes >= 1) & (model.sizes <= MAX_SIDE)).all(axis=1))
    if bad.size:
        raise fail(f"images whose camera size is outside 1..{MAX_SIDE} pixels", bad)
    if not np.isfinite(model.points).all():
        raise InputError(path, "the model holds 3D points with non-finite coordinates", MODEL_FIX)


Matching = Literal["exhaustive", "sequential"]
Mapper = Literal["incremental", "global"]
SFM_CAMERA_MODEL = "SIMPLE_PINHOLE"
SFM_SEED = 0
RELAXED_MIN_INLIERS, RELAXED_MIN_INLIER_RATIO = 15, 0.1


class quiet_logs:
    """Context manager: pycolmap's own log lines (glog) shown only from ERROR up, restored after."""

    def __enter__(self):
        self.pycolmap = import_pycolmap()
        self.level = self.pycolmap.logging.minloglevel
        self.pycolmap.logging.minloglevel = 2
        return self

    def __exit__(self, *exc) -> None:
        self.pycolmap.logging.minloglevel = self.level


def extract_features(database: Path, image_dir: Path, focal_prior: float | None, size: tuple[int, int]) -> None:
    """SIFT features of every image of ``image_dir`` into ``database``, on the CPU.

    All images share one ``SIMPLE_PINHOLE`` camera (f, cx, cy) of ``size`` = (W, H); ``focal_prior`` (pixels,
    e.g. from EXIF) seeds f, else COLMAP's default 1.2 * max(W, H). Lens distortion is not modelled:
    ovs3d's cameras are pinholes.
    """
    pycolmap = import_pycolmap()
    reader = pycolmap.ImageReaderOptions(camera_model=SFM_CAMERA_MODEL)
    if focal_prior is not None:
        reader.camera_params = f"{focal_prior},{size[0] / 2},{size[1] / 2}"
    pycolmap.extract_features(str(database), str(image_dir), camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, device=pycolmap.Device.cpu)


def match_features(database: Path, matching: Matching) -> None:
    """Match and geometrically verify image pairs: all pairs (``exhaustive``), or each image with its
    next ones in name order (``sequential``, for video frames). RANSAC is seeded."""
    pycolmap = import_pycolmap()
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = SFM_SEED
    if matching == "exhaustive":
        pycolmap.match_exhaustive(str(database), verification_options=verification, device=pycolmap.Device.cpu)
    elif matching == "sequential":
        pycolmap.match_sequential(str(database), verification_options=verification, device=pycolmap.Device.cpu)
    else:
        raise ValueError(f"unknown matching {matching!r}")


def map_images(database: Path, image_dir: Path, scratch: Path, mapper: Mapper, model_dir: Path,
               on_registered: Callable[[], None] | None = None) -> int:
    """Recover poses and sparse points; write the largest reconstruction (most registered images) to
    ``model_dir`` in COLMAP's binary format and return its number of registered images (0: none).

    ``incremental``: COLMAP's incremental mapper (``on_registered`` is called after each new image).
    When it leaves images out (it splits weakly connected captures into several models), it runs once
    more with relaxed absolute-pose thresholds (>= 15 inliers, inlier ratio >= 0.1, instead of 30 and
    0.25) and keeps the run that poses more images;
    ``global``: GLOMAP's global mapper (rotation averaging + global positioning), merged into COLMAP 3.12+.
    """
    pycolmap = import_pycolmap()
    n_images = len(list(image_dir.iterdir()))
    if mapper == "incremental":
        largest = None
        for attempt, relaxed in enumerate((False, True)):
            options = pycolmap.IncrementalPipelineOptions(random_seed=SFM_SEED)
            if relaxed:
                options.mapper.abs_pose_min_num_inliers = RELAXED_MIN_INLIERS
                options.mapper.abs_pose_min_inlier_ratio = RELAXED_MIN_INLIER_RATIO
            output = scratch / f"incremental-{attempt}"
            output.mkdir(parents=True, exist_ok=True)
            models = pycolmap.incremental_mapping(str(database), str(image_dir), str(output), options,
                                                  next_image_callback=None if relaxed else on_registered)
            best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
            if best is not None and (largest is None or best.num_reg_images() > largest.num_reg_images()):
                largest = best
            if largest is not None and largest.num_reg_images() == n_images:
                break
            if not relaxed:
                print(f"incremental mapping posed {largest.num_reg_images() if largest else 0} of {n_images} "
                      f"images; retrying with relaxed registration (>= {RELAXED_MIN_INLIERS} inliers, "
                      f"inlier ratio >= {RELAXED_MIN_INLIER_RATIO})", flush=True)
    elif mapper == "global":
        output = scratch / "global"
        output.mkdir(parents=True, exist_ok=True)
        options = pycolmap.GlobalPipelineOptions(random_seed=SFM_SEED)
        models = pycolmap.global_mapping(str(database), str(image_dir), str(output), options)
        largest = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    else:
        raise ValueError(f"unknown mapper {mapper!r}")
    if largest is None:
        return 0
    model_dir.mkdir(parents=True, exist_ok=True)
    largest.write(str(model_dir))
    return largest.num_reg_images()


def pycolmap_version() -> str:
    return str(import_pycolmap().__version__)
