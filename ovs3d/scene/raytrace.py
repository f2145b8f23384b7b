"""Exact analytic ray tracing of a few primitives: planes, spheres, boxes, cylinders, cones.

Rays are numpy float64 arrays: origins and directions [R, 3] (directions need not be unit length;
``t`` is measured in units of the direction's length, so with camera-frame z component -1, t is the
depth along the camera's -z axis). Every primitive is described by a plain dict (JSON-serialisable,
it is what ``scene.json`` stores) with a ``shape`` key:

- ``plane``: ``point`` [3], ``normal`` [3] (unit) -- infinite plane.
- ``sphere``: ``center`` [3], ``radius``.
- ``box``: ``center`` [3], ``half_size`` [3], ``yaw`` (radians, rotation about +y).
- ``cylinder``: ``base`` [3] (centre of the bottom disc), ``radius``, ``height``; axis along +y, capped.
- ``cone``: ``base`` [3] (centre of the bottom disc), ``radius``, ``height``; apex at base + height * y.

Shading (``shade``): albedo(p) * (ambient + (1 - ambient) * max(0, n.l) * lit) + specular *
max(0, r.v)^shininess * lit, with one directional light l and hard shadows (``lit`` in {0, 1}).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7
SHADOW_OFFSET = 1e-4


def _quadratic_roots(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both real roots of a t^2 + b t + c = 0 (NaN where none; the linear case when a ~ 0), [R] each."""
    disc = b * b - 4.0 * a * c
    sqrt_disc = np.sqrt(np.where(disc >= 0.0, disc, np.nan))
    linear = np.abs(a) < 1e-12
    safe_a = np.where(linear, 1.0, a)
    t1 = (-b - sqrt_disc) / (2.0 * safe_a)
    t2 = (-b + sqrt_disc) / (2.0 * safe_a)
    t_lin = np.where(np.abs(b) > 1e-12, -c / np.where(np.abs(b) > 1e-12, b, 1.0), np.nan)
    return np.where(linear, t_lin, t1), np.where(linear, np.nan, t2)


def _nearest(*candidates: np.ndarray) -> np.ndarray:
    """Smallest candidate t > EPS per ray (inf where none), [R]."""
    stacked = np.stack(candidates)
    stacked = np.where(np.isfinite(stacked) & (stacked > EPS), stacked, np.inf)
    return stacked.min(axis=0)


def _yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation about +y by ``yaw`` (local -> world), [3, 3]."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _disc_hit(o: np.ndarray, d: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """t where rays cross the horizontal disc (y = center_y, radius about center), NaN elsewhere."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (center[1] - o[:, 1]) / d[:, 1]
    p = o + t[:, None] * d
    inside = (p[:, 0] - center[0]) ** 2 + (p[:, 2] - center[2]) ** 2 <= radius**2
    return np.where(inside, t, np.nan)


def intersect(prim: dict, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance t of the nearest hit (t > EPS) of rays with one primitive, inf on a miss. o, d: [R, 3]."""
    shape = prim["shape"]
    if shape == "plane":
        n, p0 = np.asarray(prim["normal"]), np.asarray(prim["point"])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((p0 - o) @ n) / (d @ n)
        return _nearest(t)
    if shape == "sphere":
        oc = o - np.asarray(prim["center"])
        t1, t2 = _quadratic_roots((d * d).sum(1), 2.0 * (oc * d).sum(1), (oc * oc).sum(1) - prim["radius"] ** 2)
        return _nearest(t1, t2)
    if shape == "box":
        rot = _yaw_matrix(prim["yaw"])
        lo = (o - np.asarray(prim["center"])) @ rot  # world -> local: R^T x, written as x @ R
        ld = d @ rot
        half = np.asarray(prim["half_size"])
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = (-half - lo) / ld
            tb = (half - lo) / ld
        t_near = np.nanmax(np.minimum(ta, tb), axis=1)
        t_far = np.nanmin(np.maximum(ta, tb), axis=1)
        hit = t_near <= t_far
        return _nearest(np.where(hit, t_near, np.nan), np.where(hit, t_far, np.nan))
    if shape == "cylinder":
        base, r, h = np.asarray(prim["base"]), prim["radius"], prim["height"]
        ox, oz = o[:, 0] - base[0], o[:, 2] - base[2]
        t1, t2 = _quadratic_roots(d[:, 0] ** 2 + d[:, 2] ** 2, 2.0 * (ox * d[:, 0] + oz * d[:, 2]),
                                  ox**2 + oz**2 - r**2)
        side = []
        for t in (t1, t2):
            y = o[:, 1] + t * d[:, 1] - base[1]
            side.append(np.where((y >= 0.0) & (y <= h), t, np.nan))
        top = base + np.array([0.0, h, 0.0])
        return _nearest(*side, _disc_hit(o, d, base, r), _disc_hit(o, d, top, r))
    if shape == "cone":
        base, r, h = np.asarray(prim["base"]), prim["radius"], prim["height"]
        k2 = (r / h) ** 2
        q = o - (base + np.array([0.0, h, 0.0]))  # relative to the apex
        a = d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2
        b = 2.0 * (q[:, 0] * d[:, 0] + q[:, 2] * d[:, 2] - k2 * q[:, 1] * d[:, 1])
        c = q[:, 0] ** 2 + q[:, 2] ** 2 - k2 * q[:, 1] ** 2
        t1, t2 = _quadratic_roots(a, b, c)
        side = []
        for t in (t1, t2):
            y = q[:, 1] + t * d[:, 1]
            side.append(np.where((y >= -h) & (y <= 0.0), t, np.nan))
        return _nearest(*side, _disc_hit(o, d, base, r))
    raise ValueError(f"unknown primitive shape {shape!r}")


def normal_at(prim: dict, p: np.ndarray) -> np.ndarray:
    """Outward unit normals [R, 3] of a primitive at surface points p [R, 3]."""
    shape = prim["shape"]
    if shape == "plane":
        return np.broadcast_to(np.asarray(prim["normal"], dtype=np.float64), p.shape).copy()
    if shape == "sphere":
        n = p - np.asarray(prim["center"])
    elif shape == "box":
        rot = _yaw_matrix(prim["yaw"])
        local = (p - np.asarray(prim["center"])) @ rot
        ratio = np.abs(local) / np.asarray(prim["half_size"])
        axis = ratio.argmax(axis=1)
        n_local = np.zeros_like(local)
        n_local[np.arange(len(p)), axis] = np.sign(local[np.arange(len(p)), axis])
        n = n_local @ rot.T
    elif shape in ("cylinder", "cone"):
        base, r, h = np.asarray(prim["base"]), prim["radius"], prim["height"]
        rel = p - base
        radial = np.stack([rel[:, 0], np.zeros(len(p)), rel[:, 2]], axis=1)
        if shape == "cylinder":
            side = radial
        else:  # gradient of x^2 + z^2 - (r/h)^2 (y - h)^2
            side = radial + np.stack([np.zeros(len(p)), -(r / h) ** 2 * (rel[:, 1] - h), np.zeros(len(p))], 1)
        n = side.copy()
        tol = 1e-6 * max(1.0, h)
        bottom, top = np.abs(rel[:, 1]) < tol, np.abs(rel[:, 1] - h) < tol
        n[bottom] = [0.0, -1.0, 0.0]
        if shape == "cylinder":
            n[top] = [0.0, 1.0, 0.0]
    else:
        raise ValueError(f"unknown primitive shape {shape!r}")
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def first_hits(prims: list[dict], o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit over all primitives: (index [R] int, -1 on a miss; t [R], inf on a miss)."""
    ts = np.stack([intersect(p, o, d) for p in prims])
    index = ts.argmin(axis=0)
    t = ts[index, np.arange(o.shape[0])]
    return np.where(np.isfinite(t), index, -1), t


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer tuple (for per-plank/brick shades)."""
    x = np.zeros(np.broadcast(*ints).shape)
    for k, v in enumerate(ints):
        x = x + v * (12.9898 + 65.233 * k)
    return np.modf(np.abs(np.sin(x) * 43758.5453))[0]


def albedo(prim: dict, p: np.ndarray) -> np.ndarray:
    """Procedural solid texture: RGB albedo [R, 3] at surface points p [R, 3] (view-independent)."""
    color = np.asarray(prim["color"], dtype=np.float64)
    texture = prim["texture"]
    if texture == "wood":  # planks along z, each its own shade, with grain and dark seams
        plank = np.floor(p[:, 0] / 0.6)
        grain = 0.5 + 0.5 * np.sin(p[:, 2] * 11.0 + 2.0 * np.sin(p[:, 0] * 5.0))
        shade = 0.72 + 0.2 * _hash01(plank) + 0.1 * grain
        shade = np.where(np.modf(p[:, 0] / 0.6 - plank)[0] < 0.05, 0.45, shade)
    elif texture == "stone":  # running-bond bricks in (x, y) with light mortar
        row = np.floor(p[:, 1] / 0.45)
        u = p[:, 0] / 0.9 + 0.5 * (row % 2)
        col = np.floor(u)
        mortar = (np.modf(u - col)[0] < 0.05) | (np.modf(p[:, 1] / 0.45 - row)[0] < 0.1)
        shade = np.where(mortar, 1.15, 0.7 + 0.3 * _hash01(row, col))
    elif texture == "stripes":  # horizontal bands
        shade = np.where(np.sin(p[:, 1] * 2 * np.pi / prim.get("period", 0.3)) > 0, 1.0, 0.65)
    elif texture == "checker":  # 3D checker in the primitive's local frame
        local = (p - np.asarray(prim["center"])) @ _yaw_matrix(prim["yaw"])
        cell = np.floor(local / prim.get("period", 0.25)).sum(axis=1)
        shade = np.where(cell % 2 == 0, 1.0, 0.6)
    elif texture == "segments":  # vertical bands by angle around the axis
        rel = p - np.asarray(prim["base"])
        angle = np.arctan2(rel[:, 2], rel[:, 0])
        shade = np.where(np.floor(angle / (2 * np.pi) * 12) % 2 == 0, 1.0, 0.62)
    else:
        raise ValueError(f"unknown texture {texture!r}")
    return np.clip(color[None, :] * shade[:, None], 0.0, 1.0)


def shade(prims: list[dict], index: np.ndarray, t: np.ndarray, o: np.ndarray, d: np.ndarray,
          light_dir: np.ndarray, ambient: float, background: np.ndarray) -> np.ndarray:
    """Colour [R, 3] of hits (index, t from ``first_hits``) lit by a directional light (unit ``light_dir``
    pointing towards the light), with hard shadows cast by every non-plane primitive."""
    rgb = np.broadcast_to(background, o.shape).copy()
    casters = [p for p in prims if p["shape"] != "plane"]
    for k, prim in enumerate(prims):
        sel = index == k
        if not sel.any():
            continue
        p = o[sel] + t[sel, None] * d[sel]
        n = normal_at(prim, p)
        view = -d[sel] / np.linalg.norm(d[sel], axis=1, keepdims=True)
        n = np.where(((n * view).sum(1) < 0)[:, None], -n, n)  # face the viewer
        shadow_o = p + SHADOW_OFFSET * n
        shadow_d = np.broadcast_to(light_dir, p.shape)
        lit = np.ones(len(p))
        for caster in casters:
            lit[np.isfinite(intersect(caster, shadow_o, shadow_d))] = 0.0
        cos = np.clip(n @ light_dir, 0.0, None) * lit
        color = albedo(prim, p) * (ambient + (1.0 - ambient) * cos)[:, None]
        if prim.get("specular", 0.0) > 0:
            reflect = 2.0 * (n @ light_dir)[:, None] * n - light_dir
            spec = np.clip((reflect * view).sum(1), 0.0, None) ** prim.get("shininess", 32.0) * lit
            color = color + prim["specular"] * spec[:, None]
        rgb[sel] = color
    return np.clip(rgb, 0.0, 1.0)
