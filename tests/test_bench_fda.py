"""bench.fda's measuring tools: the boundary band, the band IoU and the exact affinity source."""

import numpy as np
import torch
import torch.nn.functional as F

from bench.fda import EXACT_NAME, band_iou, band_mask, exact_dino_cache, token_primitives, wrong_pull_share
from ovs3d.features.cache import FeatureMaps
from ovs3d.scene.synthetic import make_synthetic_scene


def halves(width: int = 12, height: int = 6, split: int = 5) -> np.ndarray:
    labels = np.zeros((height, width), int)
    labels[:, split:] = 1
    return labels


def test_band_is_the_columns_within_the_radius_of_the_change():
    band = band_mask(halves(split=5), radius=2)
    assert band.all(axis=0).tolist() == [c in range(2, 8) for c in range(12)]


def test_band_iou_is_one_for_the_truth_and_lower_for_a_shifted_boundary():
    truth = halves()
    gt = np.eye(2, dtype=np.uint8)[truth][None]  # [1, H, W, 2]
    assert band_iou(truth[None], gt, radius=2) == 1.0
    # band = columns 2..7; predicting column 5 as class 0: class 0 IoU 3/4 (truth 2-4, pred 2-5),
    # class 1 IoU 2/3 (truth 5-7, pred 6-7)
    assert band_iou(halves(split=6)[None], gt, radius=2) == round((3 / 4 + 2 / 3) / 2, 4)


def test_exact_source_separates_primitives_and_is_labelled_not_dino(tmp_path):
    scene = make_synthetic_scene(tmp_path / "scene", seed=0, n_views=2, width=64, height=48, supersample=1)
    folder = exact_dino_cache(scene, tmp_path / "exact", noise=0.05, seed=0)
    maps = FeatureMaps(folder)
    assert "NOT DINO" in maps.encoder and maps.encoder == EXACT_NAME
    feats = F.normalize(maps.dense(0).flatten(1).T, dim=1)
    cells = token_primitives(scene, 0).flatten(1).T
    ident = cells.argmax(1)
    cos = feats @ feats.T
    same = ident[:, None] == ident[None]
    assert cos[same].min() > 0.9 and cos[~same].max() < 0.5
    assert wrong_pull_share(scene, folder) == 0.0
    assert torch.equal(cells.sum(1), torch.ones(len(cells))) and len(ident.unique()) >= 3
