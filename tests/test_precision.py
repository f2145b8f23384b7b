"""Encoder fast paths: precision resolution, bf16 / int8 against fp32, distinct crops, calibration."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from ovs3d.errors import InputError
from ovs3d.features import calibrate, precision
from ovs3d.features.encoders import ClipConfig
from ovs3d.features.pyramid import PyramidConfig, average_into_pixels, crop_boxes, cut_crops, distinct_crops, extract_hierarchy
from ovs3d.features.registry import build_image_text_encoder
from features_helpers import single_thread, tiny_clip_weights  # noqa: F401  (fixtures)


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr("ovs3d.device.cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert precision.resolve("auto", cpu) == "bf16" and precision.resolve("fp32", cpu) == "fp32"
    assert precision.resolve("auto", cpu, auto_bf16=False) == "fp32"  # DINO's auto
    monkeypatch.setattr("ovs3d.device.cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert precision.resolve("auto", cpu) == "fp32"
    assert precision.resolve("auto", torch.device("cuda")) == "fp16"
    with pytest.raises(InputError, match="int8 runs on the CPU only"):
        precision.resolve("int8", torch.device("cuda"))


def test_bf16_stores_matrix_weights_in_bf16_and_keeps_norms_fp32():
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    x = torch.randn(5, 8)
    want = model(x)
    fast = precision.prepare(model, "bf16", torch.device("cpu"))
    assert fast[0].weight.dtype == torch.bfloat16 and fast[2].weight.dtype == torch.bfloat16
    assert fast[1].weight.dtype == torch.float32
    with precision.autocast("bf16", torch.device("cpu")):
        got = fast(x)
    assert got.dtype == torch.bfloat16 and torch.allclose(got.float(), want, atol=0.05)


@pytest.mark.parametrize("name", ["bf16", "int8"])
def test_fast_paths_follow_fp32_on_tiny_clip(tiny_clip_weights, name):
    path, _ = tiny_clip_weights
    build = lambda p: build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=path, precision=p),  # noqa: E731
                                               torch.device("cpu"))
    ref, fast = build("fp32"), build(name)
    assert ref.precision == "fp32" and fast.precision == name
    crops = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    cos = torch.cosine_similarity(fast.encode_images(crops), ref.encode_images(crops), dim=1)
    assert cos.min() > 0.99
    assert torch.equal(fast.encode_texts(["a red ball"]), ref.encode_texts(["a red ball"]))  # text tower: fp32


def old_hierarchy(image, encoder, config, image_index, batch_size):
    """The pre-deduplication path: every crop of a scale encoded, in grid order, ``batch_size`` a pass."""
    _, height, width = image.shape
    scales = []
    for boxes in crop_boxes(width, height, config, image_index):
        emb = torch.cat([encoder.encode_images(cut_crops(image, boxes[i:i + batch_size], encoder.input_size))
                         for i in range(0, len(boxes), batch_size)])
        scales.append(average_into_pixels(boxes, emb, height, width))
    return torch.stack(scales)


def test_fp32_batched_distinct_crop_path_equals_the_old_path(tiny_clip_weights):
    """60 x 40 with jitter: many crops coincide after clamping; the averages are unchanged."""
    enc = build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=tiny_clip_weights[0], precision="fp32"),
                                   torch.device("cpu"))
    config = PyramidConfig(seed=2, batch_size=8)
    boxes = crop_boxes(60, 40, config, image_index=1)
    assert sum(len(distinct_crops(b)[0]) for b in boxes) < sum(len(b) for b in boxes)  # duplicates present
    image = torch.rand(3, 40, 60, generator=torch.Generator().manual_seed(4))
    got = extract_hierarchy(image, enc, config, image_index=1)
    want = old_hierarchy(image, enc, config, 1, 8)
    assert torch.allclose(got, want, atol=1e-5)


def test_distinct_crops_round_trip_sorted_by_side():
    boxes = torch.tensor([[0, 0, 5], [1, 2, 3], [0, 0, 5], [4, 4, 3], [1, 2, 3], [2, 0, 4]])
    distinct, index = distinct_crops(boxes)
    assert len(distinct) == 4 and torch.equal(distinct[index], boxes)
    assert torch.equal(distinct[:, 2], distinct[:, 2].sort().values)


def test_calibration_is_measured_once_then_read_back(tmp_path):
    path = tmp_path / "calibration.json"
    calls = []

    def forward(batch):
        calls.append(batch)

    choice = calibrate.calibrated_batch_size("enc", "bf16", forward, candidates=(2, 4), path=path)
    assert choice in (2, 4) and calls == [2, 2, 4]  # warm-up, then each candidate once
    stored = json.loads(path.read_text())
    (entry,) = stored.values()
    assert entry["batch_size"] == choice and set(entry["seconds_per_input"]) == {"2", "4"}
    assert calibrate.calibrated_batch_size("enc", "bf16", forward, candidates=(2, 4), path=path) == choice
    assert calls == [2, 2, 4]  # read back, not measured again
    calibrate.calibrated_batch_size("enc", "fp32", forward, candidates=(2, 4), path=path)
    assert len(calls) == 6 and len(json.loads(path.read_text())) == 2  # another precision: its own entry
    path.write_text("{damaged")
    calibrate.calibrated_batch_size("enc", "bf16", forward, candidates=(2, 4), path=path)
    assert len(calls) == 9


def test_openclip_cpu_batch_size_is_calibrated_on_first_use(tiny_clip_weights, calibration_in_a_temporary_file):
    enc = build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=tiny_clip_weights[0]), torch.device("cpu"))
    assert enc.batch_size in calibrate.CANDIDATES
    stored = json.loads(calibration_in_a_temporary_file.read_text())
    assert any(key.startswith(enc.name) and f"| {enc.precision} |" in key for key in stored)
