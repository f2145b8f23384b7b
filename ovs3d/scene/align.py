"""Similarity alignment of two point sets (Umeyama 1991), to compare poses from different reconstructions."""

from __future__ import annotations

import numpy as np


def umeyama(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising sum_i |target_i - (s R source_i + t)|^2 over scale s > 0, rotation R
    (det +1) and translation t. source, target: [N, 3] with N >= 3 non-collinear points.

    With centred sets X, Y and the SVD of the covariance Y^T X / N = U D V^T: R = U S V^T with
    S = diag(1, 1, sign(det(U V^T))), s = trace(D S) / var(X), t = mean(Y) - s R mean(X).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    mu_x, mu_y = source.mean(0), target.mean(0)
    x, y = source - mu_x, target - mu_y
    u, d, vt = np.linalg.svd(y.T @ x / len(x))
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = float(np.trace(np.diag(d) @ sign) / (x ** 2).sum(1).mean())
    return scale, rot, mu_y - scale * rot @ mu_x


def aligned_error(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-point distances [N] after aligning ``source`` onto ``target`` with ``umeyama``, and the
    target's spread (RMS distance of its points to their mean) to express them relatively."""
    s, rot, t = umeyama(source, target)
    errors = np.linalg.norm(target - (s * source @ rot.T + t), axis=1)
    spread = float(np.sqrt(((target - target.mean(0)) ** 2).sum(1).mean()))
    return errors, spread
