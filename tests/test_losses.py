"""Known-answer tests of the stage-2 losses (ovs3d/train/losses.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from ovs3d.train.losses import (
    feature_distillation_loss,
    fda_loss,
    fda_loss_dense,
    js_divergence_from_log,
    relevancy_alignment_loss,
    rgb_loss,
)


def js_numpy(p: np.ndarray, q: np.ndarray) -> float:
    """JS by its definition: 1/2 KL(p||m) + 1/2 KL(q||m)."""
    m = (p + q) / 2
    return 0.5 * float(np.sum(p * np.log(p / m))) + 0.5 * float(np.sum(q * np.log(q / m)))


def test_js_known_values():
    p = np.array([0.5, 0.5])
    q = np.array([0.9, 0.1])
    js = js_divergence_from_log(torch.tensor(np.log(p)), torch.tensor(np.log(q)))
    # by hand: m = (0.7, 0.3); 0.5*(0.5 ln(5/7) + 0.5 ln(5/3)) + 0.5*(0.9 ln(9/7) + 0.1 ln(1/3))
    expected = 0.5 * (0.5 * math.log(5 / 7) + 0.5 * math.log(5 / 3)) + 0.5 * (0.9 * math.log(9 / 7) + 0.1 * math.log(1 / 3))
    assert js.item() == pytest.approx(expected, abs=1e-12)
    assert js.item() == pytest.approx(js_numpy(p, q), abs=1e-12)
    same = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    assert js_divergence_from_log(same, same).item() == pytest.approx(0.0, abs=1e-15)
    # nearly disjoint supports approach the upper bound log 2
    a = torch.log_softmax(torch.tensor([60.0, 0.0], dtype=torch.float64), -1)
    b = torch.log_softmax(torch.tensor([0.0, 60.0], dtype=torch.float64), -1)
    assert js_divergence_from_log(a, b).item() == pytest.approx(math.log(2), abs=1e-10)


def test_feature_distillation_known_values():
    f = torch.eye(4)[:3]  # three orthonormal scale features [3, 4]
    clip = f[None].repeat(2, 1, 1)  # [B=2, 3, 4]
    selection = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    # ray 0: target e0 and F = 3 e0 -> cos 1; ray 1: target (e0+e1)/sqrt2 and F = e0 -> cos 1/sqrt2
    features = torch.stack([3 * f[0], f[0]])
    loss = feature_distillation_loss(features, selection, clip)
    assert loss.item() == pytest.approx(-(1 + 1 / math.sqrt(2)) / 2, abs=1e-6)
    # orthogonal feature -> 0
    assert feature_distillation_loss(torch.eye(4)[3:4], selection[:1], clip[:1]).item() == pytest.approx(0.0, abs=1e-7)


def test_feature_distillation_gradient_reaches_selection():
    clip = nnf.normalize(torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    selection = torch.full((5, 3), 1 / 3, requires_grad=True)
    features = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    feature_distillation_loss(features, selection, clip).backward()
    assert selection.grad.abs().sum() > 0 and features.grad.abs().sum() > 0


def test_feature_distillation_stop_gradient_on_selection():
    clip = nnf.normalize(torch.randn(5, 3, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    selection = torch.softmax(torch.randn(5, 3, generator=torch.Generator().manual_seed(2)), -1).requires_grad_()
    features = torch.randn(5, 8, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = feature_distillation_loss(features, selection, clip, selection_grad=False)
    assert loss.item() == pytest.approx(feature_distillation_loss(features, selection, clip).item())
    loss.backward()
    assert selection.grad is None and features.grad.abs().sum() > 0


def test_relevancy_alignment_known_value():
    text = torch.eye(3, dtype=torch.float64)  # t_hat_c = e_c, so <F, t_c> = F_c
    features = torch.tensor([[2.0, 0.0, 0.0]], dtype=torch.float64)
    selection = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    relevancy = torch.zeros(1, 3, 3, dtype=torch.float64)
    relevancy[0, 0] = torch.tensor([1.0, 0.0, 0.0])
    loss = relevancy_alignment_loss(features, text, selection, relevancy)
    p = np.exp([2.0, 0, 0]) / np.exp([2.0, 0, 0]).sum()  # unnormalised F (faithful)
    q = np.exp([1.0, 0, 0]) / np.exp([1.0, 0, 0]).sum()
    assert loss.item() == pytest.approx(js_numpy(p, q), abs=1e-12)
    # normalised F at temperature 1: p = softmax(1, 0, 0) = q -> 0
    assert relevancy_alignment_loss(features, text, selection, relevancy,
                                    normalize_features=True).item() == pytest.approx(0.0, abs=1e-12)


def test_rgb_loss():
    assert rgb_loss(torch.zeros(2, 3), torch.full((2, 3), 0.5)).item() == pytest.approx(0.25)


def test_fda_two_positions_known_value():
    # one crop, two positions with identical DINO features: D = 1 - 0.7 = 0.3 on all 4 pairs (all positive)
    text = torch.eye(2, dtype=torch.float64)
    features = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]], dtype=torch.float64)
    dino = torch.ones(1, 2, 5, dtype=torch.float64)
    pos, neg = fda_loss(features, text, dino, temperature=0.2, shift=0.7)
    p1 = np.exp([1 / 0.2, 0.0]); p1 /= p1.sum()
    p2 = np.array([0.5, 0.5])  # cos to both texts is 1/sqrt2
    expected = 2 * 0.3 * js_numpy(p1, p2) / 4  # self-pairs have JS 0 but count in #{D+ != 0}
    assert pos.item() == pytest.approx(expected, abs=1e-12)
    assert neg.item() == 0.0


def brute_force_fda(features, text, dino, temperature, shift):
    """Pair-by-pair loops over the definition (spec 6.5.3)."""
    f = nnf.normalize(features, dim=-1)
    prob = torch.softmax(f @ text.t() / temperature, -1).numpy()
    d = nnf.normalize(dino, dim=-1)
    corr = (d @ d.transpose(1, 2)).numpy() - shift
    sp = sn = 0.0
    cp = cn = 0
    for n in range(prob.shape[0]):
        for i in range(prob.shape[1]):
            for j in range(prob.shape[1]):
                js = js_numpy(prob[n, i], prob[n, j])
                if corr[n, i, j] > 0:
                    sp += corr[n, i, j] * js
                    cp += 1
                elif corr[n, i, j] < 0:
                    sn += corr[n, i, j] * js
                    cn += 1
    return sp / cp, sn / cn


def random_fda_inputs(seed: int, crops=2, positions=7, classes=4, dim=6, dino_dim=5):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(crops, positions, dim, generator=g, dtype=torch.float64)
    text = nnf.normalize(torch.randn(classes, dim, generator=g, dtype=torch.float64), dim=-1)
    dino = torch.randn(crops, positions, dino_dim, generator=g, dtype=torch.float64)
    return features, text, dino


def test_fda_matches_brute_force_and_dense():
    features, text, dino = random_fda_inputs(3)
    ref_pos, ref_neg = brute_force_fda(features, text, dino, 0.2, 0.1)
    for chunk in (1, 3, 64):  # 3 does not divide 7
        pos, neg = fda_loss(features, text, dino, temperature=0.2, shift=0.1, chunk=chunk)
        assert pos.item() == pytest.approx(ref_pos, rel=1e-10)
        assert neg.item() == pytest.approx(ref_neg, rel=1e-10)
    dpos, dneg = fda_loss_dense(features, text, dino, temperature=0.2, shift=0.1)
    assert dpos.item() == pytest.approx(ref_pos, rel=1e-10)
    assert dneg.item() == pytest.approx(ref_neg, rel=1e-10)
    assert ref_neg < 0 < ref_pos


def test_fda_gradient_matches_dense_autograd():
    features, text, dino = random_fda_inputs(5)
    f1 = features.clone().requires_grad_(True)
    pos, neg = fda_loss(f1, text, dino, temperature=0.2, shift=0.1, chunk=3)
    (200 * pos + 0.2 * neg).backward()
    f2 = features.clone().requires_grad_(True)
    dpos, dneg = fda_loss_dense(f2, text, dino, temperature=0.2, shift=0.1)
    (200 * dpos + 0.2 * dneg).backward()
    torch.testing.assert_close(f1.grad, f2.grad, rtol=1e-9, atol=1e-12)


def test_fda_gradcheck():
    features, text, dino = random_fda_inputs(7, crops=1, positions=4, classes=3)
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: torch.stack(fda_loss(f, text, dino, temperature=0.5, shift=0.0, chunk=2)), (features,))
