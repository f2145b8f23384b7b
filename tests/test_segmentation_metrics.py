"""Known-answer tests of both segmentation protocols, the report and the colour maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ovs3d.eval.report import write_report
from ovs3d.eval.segmentation import (evaluate_3dovs, evaluate_per_query, evaluate_per_query_lerf, iou_per_class,
                                     subset_accuracy)
from ovs3d.features.builtin import ColorWordEncoder
from ovs3d.features.relevancy import CANONICAL_NEGATIVES, negative_embeddings, pairwise_relevancy
from ovs3d.io.colormaps import PALETTE, class_colors, label_boundaries, legend, overlay


def one_hot(labels: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype=np.uint8)[labels]


def test_3dovs_protocol_known_answer():
    # view 0: 2x3 image, classes 0/1/2; GT left column class 0, rest class 1; class 2 absent everywhere
    gt_labels = np.array([[0, 1, 1], [0, 1, 1]])
    pred = np.array([[0, 0, 1], [0, 1, 1]])
    gt = one_hot(gt_labels, 3)[None]
    result = evaluate_3dovs(pred[None], gt, views=[4], classes=["a", "b", "c"])
    # class 0: inter 2, union 3; class 1: inter 3, union 4; class 2 absent from both -> 0 (not NaN)
    assert result.iou[0] == pytest.approx([2 / 3, 3 / 4, 0.0])
    assert result.miou == pytest.approx((2 / 3 + 3 / 4) / 3)
    assert result.accuracy == pytest.approx(5 / 6)


def test_subset_accuracy_counts_unlabelled_and_multilabel_pixels_wrong():
    pred = np.eye(2, dtype=bool)[[0, 0, 1]]
    gt = np.array([[1, 0], [0, 0], [1, 1]], dtype=bool)  # right, no label, two labels
    assert subset_accuracy(pred, gt) == pytest.approx(1 / 3)
    # class 0: predicted {0, 1}, true {0, 2} -> 1/3; class 1: predicted {2}, true {2} -> 1
    assert iou_per_class(pred, gt).tolist() == pytest.approx([1 / 3, 1.0])


def test_3dovs_means_over_views():
    gt = one_hot(np.array([[[0, 1]], [[1, 1]]]), 2)  # two views of 1x2
    pred = np.array([[[0, 1]], [[0, 1]]])
    result = evaluate_3dovs(pred, gt, views=[0, 3], classes=["a", "b"])
    assert result.miou_per_view == pytest.approx([1.0, (0 + 0.5) / 2])
    assert result.accuracy_per_view == pytest.approx([1.0, 0.5])
    assert result.miou == pytest.approx(0.625)
    assert result.accuracy == pytest.approx(0.75)


def test_per_query_protocol_known_answer():
    # one view 1x4, two classes; class 0 relevancy ramps 0..3 -> normalised (0, 1/3, 2/3, 1) >= 0.5 on the last two
    rel = np.array([[[[0.0, 1.0, 2.0, 3.0]], [[5.0, 5.0, 5.0, 5.0]]]])  # [V=1, C=2, H=1, W=4]
    gt = np.zeros((1, 1, 4, 2), dtype=np.uint8)
    gt[0, 0, 1:, 0] = 1  # class 0 on pixels 1..3 -> IoU 2/3
    result = evaluate_per_query(rel, gt, views=[2], classes=["a", "b"])
    assert result.iou[0][0] == pytest.approx(2 / 3)
    assert np.isnan(result.iou[0][1])  # class 1 absent from the GT -> skipped
    assert result.miou == pytest.approx(2 / 3)
    assert result.to_json()["iou"][0][1] is None


def unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def test_lerf_relevancy_is_the_minimum_over_negatives_of_the_pairwise_softmax():
    gen = torch.Generator().manual_seed(0)
    query, negatives = unit(torch.randn(1, 16, generator=gen)), unit(torch.randn(4, 16, generator=gen))
    features = torch.cat([query, negatives])                       # pixel 0 = the query, pixels 1..4 = a negative
    rel = pairwise_relevancy((features @ query.t()).t(), (features @ negatives.t()).t())   # [1, P], [4, P] -> [1, P]
    assert rel.shape == (1, 5)
    assert rel[0, 0] > 0.5 and bool((rel[0, 1:] < 0.5).all())
    s_q, s_n = features @ query.t(), features @ negatives.t()      # [P, 1], [P, 4]
    pair = torch.exp(10 * s_q) / (torch.exp(10 * s_q) + torch.exp(10 * s_n))
    torch.testing.assert_close(rel[0], pair.amin(1), rtol=1e-5, atol=1e-6)
    # the minimum is taken: one negative equal to the query pins it at 0.5 whatever the others
    assert float(pairwise_relevancy(torch.ones(1, 1), torch.tensor([[1.0], [-1.0]]))) == pytest.approx(0.5)


def test_lerf_negatives_with_the_builtin_encoder_are_defined_without_warnings(recwarn):
    text, note = negative_embeddings(ColorWordEncoder())
    assert text.shape[0] == len(CANONICAL_NEGATIVES) and bool(torch.isfinite(text).all())
    assert not recwarn.list and "built-in encoder" in note and "not CLIP" in note


def test_per_query_lerf_protocol_thresholds_the_relevancy_at_one_half():
    rel = np.array([[[[0.2, 0.6, 0.7, 0.4]], [[0.1, 0.1, 0.1, 0.1]]]])  # [V=1, C=2, H=1, W=4], not normalised
    gt = np.zeros((1, 1, 4, 2), dtype=np.uint8)
    gt[0, 0, 1:, 0] = 1
    gt[0, 0, 0, 1] = 1
    result = evaluate_per_query_lerf(rel, gt, views=[0], classes=["a", "b"])
    assert result.name == "per_query_lerf" and result.threshold == 0.5
    assert result.iou[0] == pytest.approx([2 / 3, 0.0])             # a query below 0.5 everywhere: an empty mask


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        evaluate_3dovs(np.zeros((1, 2, 2), int), np.zeros((1, 2, 3, 2)), [0], ["a", "b"])


def test_report_files(tmp_path):
    gt = one_hot(np.array([[[0, 1]]]), 2)
    result = evaluate_3dovs(np.array([[[0, 1]]]), gt, [0], ["red ball", "wall"])
    data = write_report(tmp_path, ["red ball", "wall"], {"clip": "builtin-color", "dino": "builtin-texture"}, True,
                        [result], reference={"teacher_2d": result})
    text = (tmp_path / "results.txt").read_text()
    assert "built-in" in text and "mIoU 1.0000" in text and "teacher_2d" in text
    loaded = json.loads((tmp_path / "metrics.json").read_text())
    assert loaded["3dovs"]["miou"] == 1.0 and loaded == data
    write_report(tmp_path, ["a"], {"clip": "x"}, False, [])
    assert "no metrics were computed" in (tmp_path / "results.txt").read_text()
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics_computed"] is False


def test_palette_and_overlay():
    assert PALETTE.shape == (72, 3)
    assert PALETTE[:4].tolist() == [[0xE6, 0x19, 0x4B], [0x3C, 0xB4, 0x4B], [0xFF, 0xE1, 0x19], [0x43, 0x63, 0xD8]]
    assert len({tuple(c) for c in PALETTE.tolist()}) == 72
    assert class_colors(74)[72].tolist() == PALETTE[0].tolist()
    labels = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]])
    rgb = np.ones((3, 3, 3), np.float32)
    out = overlay(labels, rgb, 2)
    assert label_boundaries(labels)[:, 1].all() and not label_boundaries(labels)[:, 0].any()
    assert out[0, 1].tolist() == [0, 0, 0]
    expected = np.rint(0.65 * PALETTE[0] + 0.35 * 255).astype(int).tolist()
    assert np.abs(out[0, 0].astype(int) - expected).max() <= 1
    image = legend(["a", "b", "c"])
    assert image.shape[0] == 3 * 64 and image[32, 32].tolist() == PALETTE[0].tolist()
