"""The embedded synthetic scene: a procedural tabletop with exact ground truth, forward-facing or 360.

Five objects of distinct colours and materials stand on a wooden floor (the plane y = 0) in front of
a stone wall (the plane z = -8.5), lit by one directional light with hard shadows. An LLFF-like grid
of nearby cameras (about 3 units above the floor, looking down ~27 degrees at the middle of the
scene) sees the objects at depths of roughly 4 to 8 units, the floor from depth ~3.6 (the near
bound) and the wall behind them (far bound ~9.7). The back objects show above the front ones. Every
pixel-centre ray hits exactly one of the 7 primitives, so the class masks partition each image as in
the 3D-OVS dataset.

``layout="360"``: the same five objects stand on a ring of radius ~1.3 around the origin, inside a room
of four stone walls (the planes |x| = |z| = ROOM_HALF, one class), and the cameras circle them on a ring
of radius ~5.5 at height ~2.5 (evenly spread over 360 degrees, jittered), all looking at the middle:
every object is seen from all sides. Rendering is ``ovs3d.scene.raytrace`` (exact intersections, Lambert + ambient +
specular, solid procedural textures).

Output (the 3D-OVS / LLFF layout, loadable by ``ovs3d.scene.load.load_scene``)::

    images/NN.png                     RGB renders (optionally supersampled: ss x ss rays per pixel)
    poses_bounds.npy                  [N, 17]: LLFF 3x5 [down, right, back, centre | (H, W, f)] + near, far
    depth/NN.npy                      float32 [H, W]: exact depth along the camera's -z axis (world units)
    segmentations/classes.txt         the 7 prompts
    segmentations/NN/<prompt>.png     255 where the pixel-centre ray hits that class, else 0
    scene.json                        seed, intrinsics, world camera-to-world matrices, primitives

Masks and depth come from the single pixel-centre ray of each pixel, so they are exactly consistent.
Near/far bounds are the exact min/max depth of each view. ``load_scene`` recentres and rescales the
poses by s = 0.75 * min(near): depths in the loaded scene's units are depth / s (``read_depth``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from ovs3d.errors import InputError
from ovs3d.io.images import write_png
from ovs3d.scene.normalize import BOUNDS_SCALE
from ovs3d.scene.paths import look_at
from ovs3d.scene.raytrace import first_hits, shade

FLOOR_Y = 0.0
WALL_Z = -8.5
CAMERA_HEIGHT = 3.0
LOOK_AT = np.array([0.0, 0.3, -5.2])
LIGHT_DIR = np.array([-0.45, 1.0, 0.55]) / np.linalg.norm([-0.45, 1.0, 0.55])
AMBIENT = 0.35
FOCAL_PER_WIDTH = 0.8  # horizontal field of view 2 atan(1 / 1.6) = 64 degrees
# (x, z) of the five object slots: two in front, one in the middle, two at the back, spread sideways
# so that every object is visible from every camera.
SLOTS = np.array([[-1.4, -3.6], [1.3, -3.9], [0.0, -5.3], [-1.5, -7.0], [1.5, -6.8]])
RING_SLOTS = 1.3 * np.stack([np.cos(np.arange(5) * 2 * np.pi / 5), np.sin(np.arange(5) * 2 * np.pi / 5)], 1)
ROOM_HALF = 8.0
ORBIT_RADIUS, ORBIT_HEIGHT, ORBIT_TARGET = 5.5, 2.5, np.array([0.0, 0.4, 0.0])
Layout = Literal["forward", "360"]


@dataclass
class SyntheticConfig:
    """Size and randomness of the synthetic scene."""

    seed: int = 0
    """Seed of the object layout, sizes, colour jitter and camera jitter."""
    n_views: int = 24
    """Number of cameras (a grid of rows x columns, row-major)."""
    width: int = 160
    """Image width in pixels."""
    height: int = 120
    """Image height in pixels."""
    n_annotated: int = 4
    """Number of views with class masks, evenly spread over the image indices."""
    supersample: int = 2
    """Images average ss x ss rays per pixel (masks and depth always use the pixel-centre ray)."""
    layout: Layout = "forward"
    """forward: the LLFF-like camera grid in front of a wall; 360: cameras on a ring around the objects."""


def _objects(rng: np.random.Generator, slots: np.ndarray) -> list[dict]:
    """The five objects, placed in shuffled ``slots`` [5, 2] (x, z) with jittered position, size and colour."""
    slots = slots[rng.permutation(len(slots))] + rng.uniform(-0.2, 0.2, size=(len(slots), 2))

    def size(value: float) -> float:
        return float(value * rng.uniform(0.9, 1.1))

    def color(rgb: tuple[float, float, float]) -> list[float]:
        return np.clip(np.asarray(rgb) + rng.uniform(-0.04, 0.04, 3), 0.0, 1.0).tolist()

    objs = []
    (x, z) = slots[0]
    r = size(0.55)
    objs.append(dict(prompt="red ball", shape="sphere", center=[x, FLOOR_Y + r, z], radius=r,
                     material="plastic", texture="stripes", period=0.3, color=color((0.85, 0.12, 0.1)),
                     specular=0.35, shininess=40.0))
    (x, z) = slots[1]
    half = [size(0.5), size(0.45), size(0.5)]
    objs.append(dict(prompt="blue box", shape="box", center=[x, FLOOR_Y + half[1], z], half_size=half,
                     yaw=float(rng.uniform(0, np.pi / 2)), material="wood", texture="checker", period=0.25,
                     color=color((0.15, 0.3, 0.85))))
    (x, z) = slots[2]
    objs.append(dict(prompt="yellow cone", shape="cone", base=[x, FLOOR_Y, z], radius=size(0.55),
                     height=size(1.4), material="stone", texture="stripes", period=0.25,
                     color=color((0.92, 0.82, 0.12))))
    (x, z) = slots[3]
    objs.append(dict(prompt="green cylinder", shape="cylinder", base=[x, FLOOR_Y, z], radius=size(0.45),
                     height=size(1.1), material="metal", texture="segments", color=color((0.15, 0.65, 0.2)),
                     specular=0.5, shininess=16.0))
    (x, z) = slots[4]
    half = [size(0.38), size(0.32), size(0.38)]
    objs.append(dict(prompt="purple box", shape="box", center=[x, FLOOR_Y + half[1], z], half_size=half,
                     yaw=float(rng.uniform(0, np.pi / 2)), material="fabric", texture="checker", period=0.2,
                     color=color((0.55, 0.2, 0.7))))
    return objs


def scene_primitives(seed: int, layout: Layout = "forward") -> list[dict]:
    """The primitives of the scene for ``seed``: 5 objects, the floor and the wall (forward) or the four
    walls of the room (360); each dict has a ``prompt`` (the four walls share one, so 7 classes either way)."""
    rng = np.random.default_rng(seed)
    floor = dict(prompt="brown wooden floor", shape="plane", point=[0.0, FLOOR_Y, 0.0], normal=[0.0, 1.0, 0.0],
                 material="wood", texture="wood", color=[0.6, 0.4, 0.22])

    def wall(point: list[float], normal: list[float]) -> dict:
        return dict(prompt="grey stone wall", shape="plane", point=point, normal=normal, material="stone",
                    texture="stone", color=[0.55, 0.55, 0.57])

    if layout == "forward":
        return _objects(rng, SLOTS) + [floor, wall([0.0, 0.0, WALL_Z], [0.0, 0.0, 1.0])]
    h = ROOM_HALF
    walls = [wall([-h, 0, 0], [1, 0, 0]), wall([h, 0, 0], [-1, 0, 0]), wall([0, 0, -h], [0, 0, 1]), wall([0, 0, h], [0, 0, -1])]
    return _objects(rng, RING_SLOTS) + [floor] + walls


def class_prompts(prims: list[dict]) -> list[str]:
    """The distinct prompts of ``prims`` in first-appearance order (the scene's classes)."""
    return list(dict.fromkeys(p["prompt"] for p in prims))


def camera_grid(n_views: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 3, 4] world camera-to-world matrices: a rows x cols grid (row-major, top row first) spanning
    1.2 x 0.6 units around (0, CAMERA_HEIGHT, 0), centres jittered by up to 0.05, each looking at
    LOOK_AT (jittered by up to 0.05) with +y up."""
    cols = max(1, math.ceil(math.sqrt(n_views * 4 / 3)))
    rows = math.ceil(n_views / cols)
    xs = np.linspace(-0.6, 0.6, cols) if cols > 1 else np.zeros(1)
    ys = np.linspace(0.3, -0.3, rows) if rows > 1 else np.zeros(1)
    poses = []
    for k in range(n_views):
        center = np.array([xs[k % cols], CAMERA_HEIGHT + ys[k // cols], 0.0]) + rng.uniform(-0.05, 0.05, 3)
        target = LOOK_AT + rng.uniform(-0.05, 0.05, 3)
        poses.append(look_at(center, target, np.array([0.0, 1.0, 0.0])))
    return np.stack(poses)


def camera_ring(n_views: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 3, 4] camera-to-world matrices on a ring of radius ORBIT_RADIUS at height ORBIT_HEIGHT, at evenly
    spread angles (jittered by up to 3 degrees, radius and height by up to 0.2), looking at ORBIT_TARGET, +y up."""
    poses = []
    for k in range(n_views):
        angle = 2 * np.pi * k / n_views + rng.uniform(-0.05, 0.05)
        radius, height = ORBIT_RADIUS + rng.uniform(-0.2, 0.2), ORBIT_HEIGHT + rng.uniform(-0.2, 0.2)
        center = np.array([radius * np.sin(angle), height, radius * np.cos(angle)])
        poses.append(look_at(center, ORBIT_TARGET, np.array([0.0, 1.0, 0.0])))
    return np.stack(poses)


def annotated_view_indices(n_views: int, n_annotated: int) -> list[int]:
    """``n_annotated`` image indices evenly spread over 0..n_views-1 (first and last included)."""
    return sorted({int(round(i)) for i in np.linspace(0, n_views - 1, min(n_annotated, n_views))})


def pixel_rays(c2w: np.ndarray, focal: float, width: int, height: int, du: float = 0.0, dv: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Rays of one camera (c2w [3, 4]) through the points (i + 0.5 + du, j + 0.5 + dv) of every pixel, as
    origins and directions [H * W, 3] (row-major), float64; the same rays as ``Cameras.rays``: direction
    R @ ((u - W/2) / f, -(v - H/2) / f, -1), so the ray parameter t is the depth along -z."""
    v, u = np.meshgrid(np.arange(height) + 0.5 + dv, np.arange(width) + 0.5 + du, indexing="ij")
    dirs_cam = np.stack([(u - width / 2) / focal, -(v - height / 2) / focal, -np.ones_like(u)], -1)
    dirs = dirs_cam.reshape(-1, 3) @ c2w[:, :3].T
    return np.broadcast_to(c2w[:, 3], dirs.shape).copy(), dirs


def render_view(prims: list[dict], c2w: np.ndarray, focal: float, width: int, height: int, supersample: int = 1
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render one camera (c2w [3, 4]): (rgb [H, W, 3] float64 in [0, 1], depth [H, W], primitive index [H, W]).

    Depth and index come from pixel-centre rays; rgb averages ``supersample``^2 rays on a regular
    sub-pixel grid (the centre ray only when supersample = 1)."""
    o, d = pixel_rays(c2w, focal, width, height)
    index, depth = first_hits(prims, o, d)
    bg = np.zeros(3)
    if supersample <= 1:
        rgb = shade(prims, index, depth, o, d, LIGHT_DIR, AMBIENT, bg)
    else:
        offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
        rgb = np.zeros((height * width, 3))
        for du in offsets:
            for dv in offsets:
                so, sd = pixel_rays(c2w, focal, width, height, du, dv)
                rgb += shade(prims, *first_hits(prims, so, sd), so, sd, LIGHT_DIR, AMBIENT, bg)
        rgb /= supersample**2
    return rgb.reshape(height, width, 3), depth.reshape(height, width), index.reshape(height, width)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(out, "the output path is a file", "choose a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(out, "the output folder exists and is not empty",
                         "choose another --out, or pass --overwrite to replace it")


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` onto ``out`` (replacing an existing ``out``) by renames."""
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    os.replace(out, trash / out.name)
    os.replace(tmp, out)
    shutil.rmtree(trash)


def write_scene(cfg: SyntheticConfig, folder: Path) -> None:
    """Render the scene of ``cfg`` and write all its files into the existing empty ``folder``."""
    prims = scene_primitives(cfg.seed, cfg.layout)
    focal = FOCAL_PER_WIDTH * cfg.width
    cameras = camera_grid if cfg.layout == "forward" else camera_ring
    c2w = cameras(cfg.n_views, np.random.default_rng([cfg.seed, 1]))
    annotated = annotated_view_indices(cfg.n_views, cfg.n_annotated)
    digits = max(2, len(str(cfg.n_views - 1)))
    prompts = class_prompts(prims)
    prim_class = np.array([prompts.index(p["prompt"]) for p in prims])
    seg = folder / "segmentations"
    seg.mkdir(parents=True)
    (folder / "depth").mkdir()
    (seg / "classes.txt").write_text("".join(f"{p}\n" for p in prompts))
    rows = []
    for view in range(cfg.n_views):
        rgb, depth, index = render_view(prims, c2w[view], focal, cfg.width, cfg.height, cfg.supersample)
        if not np.all(index >= 0):
            raise RuntimeError("a pixel-centre ray missed every primitive (the scene layout is broken)")
        name = f"{view:0{digits}d}"
        write_png(folder / "images" / f"{name}.png", rgb)
        np.save(folder / "depth" / f"{name}.npy", depth.astype(np.float32))
        if view in annotated:
            for k, prompt in enumerate(prompts):
                write_png(seg / name / f"{prompt}.png", np.where(prim_class[index] == k, 255, 0).astype(np.uint8))
        right, up, back, center = c2w[view].T
        llff = np.stack([-up, right, back, center, [cfg.height, cfg.width, focal]], axis=1)
        rows.append(np.concatenate([llff.reshape(-1), [depth.min(), depth.max()]]))
    np.save(folder / "poses_bounds.npy", np.stack(rows))
    meta = dict(config=asdict(cfg), focal=focal, floor_y=FLOOR_Y, wall_z=WALL_Z, light_dir=LIGHT_DIR.tolist(),
                ambient=AMBIENT, annotated_views=annotated, classes=prompts, primitives=prims,
                cameras_c2w=c2w.tolist(),
                conventions="c2w columns (right, up, back, centre), camera looks along -z; depth/NN.npy is "
                            "the distance along -z in world units; pixel centre = index + 0.5")
    (folder / "scene.json").write_text(json.dumps(meta, indent=1) + "\n")


def make_synthetic_scene(out: str | Path, seed: int = 0, n_views: int = 24, width: int = 160, height: int = 120,
                         n_annotated: int = 4, supersample: int = 2, overwrite: bool = False,
                         layout: Layout = "forward") -> Path:
    """Render the synthetic scene into ``out`` atomically (built beside it, then renamed) and return ``out``.

    Refuses (InputError) a non-empty existing ``out`` unless ``overwrite``."""
    cfg = SyntheticConfig(seed=seed, n_views=n_views, width=width, height=height, n_annotated=n_annotated,
                          supersample=supersample, layout=layout)
    out = Path(out)
    _check_out(out, overwrite)
    if n_views < 2 or width < 16 or height < 16 or n_annotated < 1 or supersample < 1:
        raise InputError(None, f"invalid scene size (n_views={n_views}, {width}x{height}, n_annotated="
                         f"{n_annotated}, supersample={supersample})",
                         "use --n-views >= 2, --width and --height >= 16, --n-annotated >= 1, --supersample >= 1")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        write_scene(cfg, tmp)
        _publish(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def read_scene_json(root: str | Path) -> dict:
    """The ``scene.json`` of a synthetic scene (primitives, world cameras, intrinsics, config)."""
    return json.loads((Path(root) / "scene.json").read_text())


def read_depth(root: str | Path, scene_units: bool = True) -> np.ndarray:
    """Exact depth maps [N, H, W] float32 of a synthetic scene, in image order.

    With ``scene_units`` the depths are divided by s = 0.75 * min(near bound), the scale ``load_scene``
    applies, so they match the loaded cameras (recentring is rigid and does not change depths)."""
    root = Path(root)
    depth = np.stack([np.load(p) for p in sorted((root / "depth").glob("*.npy"))])
    if scene_units:
        bounds = np.load(root / "poses_bounds.npy")[:, 15:]
        depth = depth / np.float32(BOUNDS_SCALE * bounds.min())
    return depth
