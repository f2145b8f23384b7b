"""Every call into pycolmap lives here: reading a COLMAP model, and structure from motion on the CPU.

Tested with pycolmap 4.2 (the range pinned in pyproject.toml is ``>=4.0,<5``: the 4.x API with
``Image.cam_from_world()``, ``extract_features(..., extraction_options=)`` and ``global_mapping``).
The rest of ovs3d sees plain numpy arrays in COLMAP's convention (``SparseModel``) and never imports
pycolmap, so a pycolmap API change is fixed in this one file.

COLMAP's convention: ``cam_from_world`` maps world points into the camera frame, whose axes are
(right, down, forward); pixel centres sit at index + 0.5, as in ovs3d.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from ovs3d.errors import InputError

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


def camera_intrinsics(camera) -> tuple[float, float, float, float, float]:
    """(fx, fy, cx, cy, largest |distortion|) of a pycolmap camera of any perspective model."""
    name = camera.model.name
    params = np.asarray(camera.params, dtype=np.float64)
    if name in SIMPLE_MODELS:
        f, cx, cy, extra = params[0], params[1], params[2], params[3:]
        return f, f, cx, cy, float(np.abs(extra).max()) if extra.size else 0.0
    fx, fy, cx, cy, extra = params[0], params[1], params[2], params[3], params[4:]
    return fx, fy, cx, cy, float(np.abs(extra).max()) if extra.size else 0.0


def read_model(path: str | Path) -> SparseModel:
    """Read a COLMAP model folder (``cameras``/``images``/``points3D`` as .bin or .txt) through
    ``pycolmap.Reconstruction``; only registered images are kept."""
    path = Path(path)
    pycolmap = import_pycolmap()
    try:
        recon = pycolmap.Reconstruction(str(path))
    except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError on unreadable models
        raise InputError(path, f"cannot read the COLMAP model ({exc})",
                         "point to a folder holding cameras.bin, images.bin and points3D.bin (or .txt)") from exc
    images = sorted((im for im in recon.images.values() if im.has_pose), key=lambda im: im.name)
    if not images:
        raise InputError(path, "the COLMAP model has no registered image", "rerun the reconstruction")
    row_of_image = {im.image_id: row for row, im in enumerate(images)}
    intr = np.array([camera_intrinsics(recon.cameras[im.camera_id]) for im in images], dtype=np.float64)
    point_ids = sorted(recon.points3D.keys())
    points = np.array([recon.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    obs = [(row_of_image[e.image_id], index) for index, pid in enumerate(point_ids)
           for e in recon.points3D[pid].track.elements if e.image_id in row_of_image]
    return SparseModel(
        names=[im.name for im in images],
        cam_from_world=np.stack([im.cam_from_world().matrix() for im in images]),
        fx=intr[:, 0], fy=intr[:, 1], cx=intr[:, 2], cy=intr[:, 3], distortion=intr[:, 4],
        sizes=np.array([[recon.cameras[im.camera_id].width, recon.cameras[im.camera_id].height] for im in images]),
        models=[recon.cameras[im.camera_id].model.name for im in images],
        points=points, observations=np.array(obs, dtype=np.int64).reshape(-1, 2))


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
