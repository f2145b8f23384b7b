"""Segmentation metrics under the two protocols of architecture section 5.

3D-OVS protocol (the paper's, method spec section 7.2): every pixel gets the argmax class over the
scene's prompts. Per view k and class c, IoU_{k,c} = |G_c and P_c| / |G_c or P_c| with P the one-hot
prediction and G the (possibly multi-label) ground truth; a class absent from both scores 0 (never
NaN, as sklearn's ``jaccard_score`` does). Accuracy_k is *subset* accuracy: a pixel is right only
when its one-hot prediction equals its GT row exactly, so pixels with zero or several GT labels are
always wrong. Scene figures are means over views of mIoU_k = mean_c IoU_{k,c} and of Accuracy_k.

Per-query protocol (LERF, LangSplat and later work): each class is queried on its own, its mask is its
relevancy map thresholded, mask = relevancy >= ``threshold`` (0.5). Two relevancies:

* ``per_query`` (min-max variant): the cosine of the rendered feature with the class's text embedding,
  min-max normalised over the pixels of the view; a query always claims the view's most similar pixels;
* ``per_query_lerf``: LERF's relevancy, min_j sigmoid(10 (s_q - s_j)) over the canonical negatives
  "object", "things", "stuff", "texture" (``features.relevancy.pairwise_relevancy``), not normalised per
  view: 0.5 is where the query stops beating the most similar negative, the decision point of the pairwise
  softmax, so a mask may be empty. (LangSplat's own script instead min-max normalises this relevancy per
  view and thresholds it at 0.4 after stretching it to [-1, 1]; that is not done here.)

IoU is computed per (class, view) for the classes present in that view's ground truth (a query for
an object that is not in the view has no defined mask to match and is skipped); the scene figure is
the mean over all evaluated (class, view) pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class ProtocolResult:
    """Scores of one protocol.

    Attributes:
        name: ``3dovs``, ``per_query`` (min-max relevancy) or ``per_query_lerf`` (LERF relevancy).
        classes: the C prompts.
        views: the annotated image indices.
        iou: [n_views][C] IoU per view and class (per_query: NaN where the pair was not evaluated).
        miou_per_view: [n_views] mean IoU of each view.
        accuracy_per_view: [n_views] subset accuracy (3dovs only; empty for per_query).
        miou: the scene mIoU; accuracy: the scene accuracy (NaN for per_query).
        threshold: per-query only, the threshold on the relevancy.
    """

    name: str
    classes: list[str]
    views: list[int]
    iou: list[list[float]]
    miou_per_view: list[float]
    accuracy_per_view: list[float]
    miou: float
    accuracy: float
    threshold: float | None = None

    def to_json(self) -> dict:
        data = asdict(self)
        # JSON has no NaN: not-evaluated pairs become null.
        data["iou"] = [[None if np.isnan(x) else x for x in row] for row in self.iou]
        if np.isnan(self.accuracy):
            data["accuracy"] = None
        return data


def iou_per_class(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU per class of boolean masks: pred, gt [P, C] -> [C]; a class absent from both gets 0."""
    inter = np.logical_and(pred, gt).sum(0).astype(np.float64)
    union = np.logical_or(pred, gt).sum(0).astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def subset_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of rows where the boolean rows pred [P, C] and gt [P, C] are identical."""
    return float(np.all(pred == gt, axis=1).mean())


def _check(labels_shape: tuple, gt: np.ndarray, views: list[int], classes: list[str]) -> None:
    if gt.ndim != 4 or gt.shape[:3] != labels_shape or gt.shape[3] != len(classes):
        raise ValueError(f"ground truth must be [n_views, H, W, C={len(classes)}] matching predictions "
                         f"{labels_shape}, got {gt.shape}")
    if len(views) != gt.shape[0]:
        raise ValueError(f"{len(views)} view indices for {gt.shape[0]} ground-truth views")


def evaluate_3dovs(labels: np.ndarray, gt: np.ndarray, views: list[int], classes: list[str]) -> ProtocolResult:
    """The 3D-OVS protocol. labels [V, H, W] int class indices; gt [V, H, W, C] in {0, 1}."""
    _check(labels.shape, gt, views, classes)
    n_classes = len(classes)
    ious, accs = [], []
    for label, truth in zip(labels, gt):
        pred = np.eye(n_classes, dtype=bool)[label.reshape(-1)]
        truth = truth.reshape(-1, n_classes).astype(bool)
        ious.append(iou_per_class(pred, truth))
        accs.append(subset_accuracy(pred, truth))
    miou_view = [float(np.mean(i)) for i in ious]
    return ProtocolResult("3dovs", list(classes), list(views), [i.tolist() for i in ious], miou_view,
                          [float(a) for a in accs], float(np.mean(miou_view)), float(np.mean(accs)))


def minmax_normalise(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise each [H, W] map of [..., H, W] to [0, 1] (a constant map becomes 0)."""
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    span = hi - lo
    return np.divide(maps - lo, span, out=np.zeros_like(maps, dtype=np.float64), where=span > 0)


def evaluate_per_query(relevancy: np.ndarray, gt: np.ndarray, views: list[int], classes: list[str],
                       threshold: float = 0.5) -> ProtocolResult:
    """The per-query protocol, min-max variant. relevancy [V, C, H, W] raw scores (e.g. cosines); gt [V, H, W, C]."""
    if relevancy.ndim != 4:
        raise ValueError(f"relevancy must be [V, C, H, W], got {relevancy.shape}")
    return query_masks_protocol("per_query", minmax_normalise(relevancy.astype(np.float64)) >= threshold, gt, views,
                                classes, threshold)


def evaluate_per_query_lerf(relevancy: np.ndarray, gt: np.ndarray, views: list[int], classes: list[str],
                            threshold: float = 0.5) -> ProtocolResult:
    """The per-query protocol, LERF variant. relevancy [V, C, H, W] LERF relevancies in [0, 1]; gt [V, H, W, C]."""
    if relevancy.ndim != 4:
        raise ValueError(f"relevancy must be [V, C, H, W], got {relevancy.shape}")
    return query_masks_protocol("per_query_lerf", relevancy >= threshold, gt, views, classes, threshold)


def query_masks_protocol(name: str, masks: np.ndarray, gt: np.ndarray, views: list[int], classes: list[str],
                         threshold: float) -> ProtocolResult:
    """IoU of each query's mask [V, C, H, W] (bool) with the class's GT, for the (view, class) pairs present in
    gt [V, H, W, C]; the scene figure is the mean over those pairs."""
    _check((masks.shape[0],) + masks.shape[2:], gt, views, classes)
    n_views, n_classes = masks.shape[:2]
    iou = np.full((n_views, n_classes), np.nan)
    for v in range(n_views):
        for c in range(n_classes):
            truth = gt[v, :, :, c].astype(bool)
            if truth.any():
                union = np.logical_or(masks[v, c], truth).sum()
                iou[v, c] = np.logical_and(masks[v, c], truth).sum() / union
    miou_view = [float(np.nanmean(row)) if np.isfinite(row).any() else float("nan") for row in iou]
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    return ProtocolResult(name, list(classes), list(views), iou.tolist(), miou_view, [], miou, float("nan"), threshold)
