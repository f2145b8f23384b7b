"""Class scores, labels and text selections of exported points (the label rules of ``render/labels.py``,
over a point cloud instead of a view).

With c_k(p) = cos(F(p), t_k) the cosine of point p's feature with class (or text) k:

    cosine rule:     s_k(p) = c_k(p)
    relevancy rule:  s_k(p) = (c_k(p) - min_q c_k(q)) / (max_q c_k(q) - min_q c_k(q)), q over the exported
                     surface points (as ``ovs3d test`` normalises over a view's pixels)
    label(p) = argmax_k s_k(p)

A free text t selects the points whose relevancy (its cosine min-max normalised over the points) is at
least ``threshold``; ``against_classes`` also asks that the text outscore every class under the label
rule (the text joins the class list as one more class). Grid nodes (meshes) are scored with the
points' ranges, so one threshold means the same cosine for points and meshes.
"""

from __future__ import annotations

import numpy as np

from ovs3d.render.labels import LABEL_RULES


def ranges(cosines: np.ndarray) -> np.ndarray:
    """[2, T] (min, max) of each column of cosines [N, T] (0, 1 for an empty cloud)."""
    if len(cosines) == 0:
        return np.stack([np.zeros(cosines.shape[1]), np.ones(cosines.shape[1])]).astype(np.float32)
    return np.stack([cosines.min(0), cosines.max(0)])


def normalized(cosines: np.ndarray, lohi: np.ndarray) -> np.ndarray:
    """Cosines [N, T] min-max normalised with ranges [2, T] (not clipped)."""
    return (cosines - lohi[0]) / np.maximum(lohi[1] - lohi[0], 1e-12)


def scores(cosines: np.ndarray, rule: str, lohi: np.ndarray | None = None) -> np.ndarray:
    """Scores s [N, T] under ``rule`` (module docstring); ``lohi`` the relevancy ranges (default: cosines' own)."""
    if rule not in LABEL_RULES:
        raise ValueError(f"unknown label rule {rule!r}; choose from {LABEL_RULES}")
    if rule == "cosine":
        return cosines.astype(np.float32)
    return normalized(cosines, ranges(cosines) if lohi is None else lohi).astype(np.float32)


def selected(text_cos: np.ndarray, class_cos: np.ndarray, rule: str, threshold: float, against_classes: bool,
             lohi: np.ndarray) -> np.ndarray:
    """[N] bool: the text's relevancy (cosines [N] normalised with the text's range lohi[:, -1]) >= threshold,
    and, with ``against_classes``, the text outscores every class (class cosines [N, C]; lohi [2, C + 1])."""
    relevancy = normalized(text_cos[:, None], lohi[:, -1:])[:, 0]
    keep = relevancy >= threshold
    if against_classes and class_cos.shape[1]:
        s = scores(np.concatenate([class_cos, text_cos[:, None]], axis=1), rule, lohi)
        keep &= s.argmax(1) == s.shape[1] - 1
    return keep
