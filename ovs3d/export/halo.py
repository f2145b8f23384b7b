"""Occlusion halos: background pixels that carry the label of the foreground object in front of them.

The semantic field is distilled from patch features (CLIP crops a few pixels to tens of pixels wide), so
near an occluding contour the teacher -- and the field that learned from it, in every view, at the 3D
points behind the contour -- labels a band of background pixels with the occluder's class. Their
median-depth points lie on the floor or wall behind the object: labelled points that are not on it.

In one rendered view with per-pixel surface distance r (from the camera centre) and label l, two
4-neighbour pixels p, q are on one surface when l_p = l_q and their depths step by less than a plane
seen at ``angle`` to the ray makes between adjacent rays (pixel angle 1/f, f the focal in pixels):

    |r_p - r_q| / min(r_p, r_q) <= 1 / (f tan(angle))

The same-label pixels then split into surface pieces (connected components). A piece that meets another
piece of its label only across depth jumps, and always as the farther side, is a halo: the background
part of a label region whose near side is the occluder. It is dropped. A piece that is in front on any
jump (an object, or the floor in front of an object) is kept, so a large region with noisy depth is
never removed whole; what is lost is a second instance of a class seen just behind the first one.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def max_step(focal: float, angle: float) -> float:
    """The largest relative depth step between adjacent pixels on one surface: 1 / (f tan(angle deg))."""
    return 1.0 / (focal * math.tan(math.radians(angle)))


def halo_pixels(depth: np.ndarray, label: np.ndarray, step: float) -> np.ndarray:
    """[H, W] bool: the pixels of halo pieces (module docstring) of one view.

    Args:
        depth: [H, W] surface distance from the camera (any unit; NaN where the ray gave no point).
        label: [H, W] int class per pixel (-1 where no point).
        step: the largest relative depth step between adjacent pixels of one surface (``max_step``).
    """
    h, w = label.shape
    index = np.arange(h * w).reshape(h, w)
    a = np.concatenate([index[:, :-1].ravel(), index[:-1, :].ravel()])         # right and down neighbours
    b = np.concatenate([index[:, 1:].ravel(), index[1:, :].ravel()])
    r, lab = depth.reshape(-1), label.reshape(-1)
    same = (lab[a] == lab[b]) & (lab[a] >= 0)
    a, b = a[same], b[same]
    smooth = np.abs(r[a] - r[b]) <= step * np.minimum(r[a], r[b])
    graph = coo_matrix((np.ones(int(smooth.sum())), (a[smooth], b[smooth])), shape=(h * w, h * w))
    _, piece = connected_components(graph, directed=False)
    a, b = a[~smooth], b[~smooth]                                               # same label, across a jump
    a_far = r[a] > r[b]
    far = np.where(a_far, piece[a], piece[b])
    near = np.where(a_far, piece[b], piece[a])
    behind = np.bincount(far, minlength=h * w) > 0
    in_front = np.bincount(near, minlength=h * w) > 0
    return (behind & ~in_front)[piece].reshape(h, w)
