"""CLIP patch hierarchy: crop grid, squares, seeded jitter, and exact per-pixel averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ovs3d.features.pyramid import (PyramidConfig, average_into_pixels, crop_boxes, encode_boxes,
                                    extract_hierarchy, grid_starts, patch_sides)
from features_helpers import single_thread  # noqa: F401  (autouse)


class CentreStub:
    """Stub encoder on a coordinate image (channel 0 = (x + 0.5) / W, channel 1 = (y + 0.5) / H):
    returns each crop's mean coordinates, i.e. the crop's centre (x0 + side / 2) / W, (y0 + side / 2) / H."""

    name = "stub"
    embedding_dim = 2
    input_size = 24
    batch_size = 64
    precision = "fp32"
    device = torch.device("cpu")

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images[:, :2].mean(dim=(2, 3))


def coordinate_image(width: int, height: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.stack([(xs + 0.5) / width, (ys + 0.5) / height, torch.zeros(height, width)]).float()


def test_paper_grid_at_504x378():
    """The paper's example: patches 75/54/37, strides 18/13/9, 450 + 936 + 2067 = 3453 crops."""
    cfg = PyramidConfig(jitter=False)
    assert patch_sides(504, 378, cfg.divisors) == [75, 54, 37]
    assert [len(b) for b in crop_boxes(504, 378, cfg)] == [18 * 25, 26 * 36, 39 * 53]
    starts = grid_starts(378, 75, 18)
    assert starts[0] == 0 and starts[-1] == 378 - 75 and len(starts) == 18  # last start clamped inward


@pytest.mark.parametrize("jitter", [False, True])
def test_crops_are_squares_inside_the_image(jitter):
    cfg = PyramidConfig(jitter=jitter, seed=3)
    for scale, (boxes, side) in enumerate(zip(crop_boxes(90, 61, cfg), patch_sides(90, 61, cfg.divisors))):
        x0, y0, s = boxes.T
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + s <= 90).all() and (y0 + s <= 61).all()
        assert (s >= side).all() and (s <= side + side // 4).all()
        if not jitter:
            assert (s == side).all()


def test_jitter_is_seeded_per_image():
    cfg = PyramidConfig(jitter=True, seed=7)
    a, b = crop_boxes(80, 60, cfg, image_index=2), crop_boxes(80, 60, cfg, image_index=2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = crop_boxes(80, 60, cfg, image_index=3)
    d = crop_boxes(80, 60, PyramidConfig(jitter=True, seed=8), image_index=2)
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    assert not all(torch.equal(x, y) for x, y in zip(a, d))


def test_stub_sees_each_crop_exactly():
    """The encoder receives the pixels of each box: the stub's answer is the box centre."""
    image = coordinate_image(52, 40)
    for boxes in crop_boxes(52, 40, PyramidConfig(jitter=True, seed=1)):
        got = encode_boxes(image, boxes, CentreStub(), batch_size=17)
        want = torch.stack([(boxes[:, 0] + boxes[:, 2] / 2) / 52, (boxes[:, 1] + boxes[:, 2] / 2) / 40], dim=1)
        assert torch.allclose(got, want.float(), atol=1e-5)


@pytest.mark.parametrize("jitter", [False, True])
def test_every_pixel_is_the_mean_over_exactly_its_crops(jitter):
    """Brute force: per pixel, the mean of the centres of the crops that contain it; every pixel covered."""
    width, height = 44, 33
    cfg = PyramidConfig(jitter=jitter, seed=5, batch_size=10)
    features = extract_hierarchy(coordinate_image(width, height), CentreStub(), cfg, image_index=4)
    assert features.shape == (3, 2, height, width) and features.dtype == torch.float32
    for scale, boxes in enumerate(crop_boxes(width, height, cfg, image_index=4)):
        b = boxes.numpy()
        centres = np.stack([(b[:, 0] + b[:, 2] / 2) / width, (b[:, 1] + b[:, 2] / 2) / height], axis=1)
        ys, xs = np.mgrid[:height, :width]
        inside = ((xs[..., None] >= b[:, 0]) & (xs[..., None] < b[:, 0] + b[:, 2])
                  & (ys[..., None] >= b[:, 1]) & (ys[..., None] < b[:, 1] + b[:, 2]))  # [H, W, n]
        counts = inside.sum(-1)
        assert (counts > 0).all(), "a pixel is covered by no crop"
        want = np.einsum("hwn,nd->dhw", inside, centres) / counts
        np.testing.assert_allclose(features[scale].numpy(), want, atol=1e-6)


def test_summed_area_matches_brute_force_on_random_embeddings():
    gen = torch.Generator().manual_seed(0)
    boxes = torch.tensor([[0, 0, 5], [2, 1, 4], [3, 3, 3], [1, 4, 2]])
    emb = torch.randn(4, 6, generator=gen)
    out = average_into_pixels(boxes, emb, 7, 8, channel_chunk=4)
    want = torch.zeros(6, 7, 8)
    count = torch.zeros(7, 8)
    for (x0, y0, s), e in zip(boxes.tolist(), emb):
        want[:, y0:y0 + s, x0:x0 + s] += e[:, None, None]
        count[y0:y0 + s, x0:x0 + s] += 1
    want = torch.where(count > 0, want / count.clamp_min(1), torch.zeros(()))
    assert torch.allclose(out, want, atol=1e-6)
