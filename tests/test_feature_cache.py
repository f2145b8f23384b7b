"""Feature cache: float16 pixel-major round trip, meta-keyed invalidation, resume after an interruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ovs3d.features import cache
from ovs3d.features.builtin import ColorKernelExtractor, ColorWordEncoder
from ovs3d.features.encoders import ClipConfig, DinoConfig
from ovs3d.features.extract import (ExtractConfig, ResolutionConfig, extract_clip, extract_dino, feature_size,
                                    store_grid)
from ovs3d.io.images import write_png
from features_helpers import single_thread, small_dino_weights, tiny_clip_weights  # noqa: F401  (fixtures)


@pytest.fixture
def tiny_scene(tmp_path) -> Path:
    """Three 40x32 images: left half red, right half blue, shifted per image."""
    root = tmp_path / "scene"
    for i in range(3):
        image = np.zeros((32, 40, 3), np.float32)
        image[:, : 16 + 4 * i] = (0.85, 0.1, 0.1)
        image[:, 16 + 4 * i:] = (0.15, 0.3, 0.85)
        write_png(root / "images" / f"{i:02d}.png", image)
    return root


def builtin_config(**pyramid) -> ExtractConfig:
    cfg = ExtractConfig(clip=ClipConfig(kind="builtin"), dino=DinoConfig(kind="builtin"))
    cfg.pyramid.jitter = pyramid.get("jitter", True)
    cfg.pyramid.seed = pyramid.get("seed", 0)
    cfg.pyramid.divisors = (2, 3, 4)  # few crops on 40x32 images: fast
    return cfg


def test_feature_size_policy():
    assert feature_size((504, 378), ResolutionConfig()) == (504, 378)
    assert feature_size((4032, 3024), ResolutionConfig()) == (504, 378)
    assert feature_size((504, 378), ResolutionConfig(downsample=2)) == (252, 189)
    assert feature_size((504, 378), ResolutionConfig(width=252)) == (252, 189)


def test_round_trip_pixel_major_float16(tiny_scene):
    cfg = builtin_config()
    folder = extract_clip(tiny_scene, cfg)
    assert folder.parent == tiny_scene / "features" and folder.name.startswith("clip-builtin-")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["encoder"] == "builtin-color-words (not CLIP)"
    assert meta["shape"] == [3, ColorWordEncoder.embedding_dim, 16, 20]
    maps = cache.FeatureMaps(folder)
    assert len(maps) == 3
    stored = np.load(folder / "01.npy", mmap_mode="r")
    assert stored.dtype == np.float16 and stored.shape == (16, 20, 3, 13)  # pixel-major on disk
    array = maps.dense(1).numpy()                                          # channel-first in memory
    assert array.shape == (3, 13, 16, 20)
    np.testing.assert_array_equal(array[:, :, 5, 3], stored[5, 3].astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=2e-3)
    # bilinear sampling at a cell centre returns that cell (renormalised)
    got = maps.sample(1, np.array([(3 + 0.5) / 20]), np.array([(5 + 0.5) / 16]))
    want = torch.from_numpy(array[:, :, 5, 3])
    assert got.shape == (1, 3, 13)
    assert torch.allclose(got[0], want / want.norm(dim=-1, keepdim=True), atol=1e-4)
    # halfway between four cell centres: the renormalised mean of the four cells
    got = maps.sample(1, np.array([4.0 / 20]), np.array([6.0 / 16]))
    mean = torch.from_numpy(array[:, :, 5:7, 3:5].mean(axis=(2, 3)))
    assert torch.allclose(got[0], mean / mean.norm(dim=-1, keepdim=True), atol=1e-4)
    window = maps.block(1, 5, 3, 2)
    assert window.shape == (2, 2, 3, 13) and torch.equal(window[1, 0], torch.from_numpy(array[:, :, 6, 3]))


def test_same_seed_same_features_and_reuse(tiny_scene, tmp_path):
    cfg = builtin_config(seed=3)
    folder = extract_clip(tiny_scene, cfg)
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")}
    assert extract_clip(tiny_scene, cfg) == folder
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npy")} == stamps  # reused, not rewritten
    other = extract_clip(tiny_scene, builtin_config(seed=4))
    assert other != folder  # another config gets its own folder
    copy = tmp_path / "copy"
    (copy / "images").mkdir(parents=True)
    for p in (tiny_scene / "images").iterdir():
        (copy / "images" / p.name).write_bytes(p.read_bytes())
    again = extract_clip(copy, cfg)
    for name in stamps:
        np.testing.assert_array_equal(np.load(folder / name), np.load(again / name))


def test_changed_images_invalidate_the_cache(tiny_scene):
    cfg = builtin_config()
    folder = extract_clip(tiny_scene, cfg)
    before = np.load(folder / "00.npy")
    image = np.zeros((32, 40, 3), np.float32)
    image[:] = (0.15, 0.6, 0.2)  # all green now
    write_png(tiny_scene / "images" / "00.png", image)
    os.utime(tiny_scene / "images" / "00.png", ns=(1, 1))
    assert not cache.is_complete(folder, {"key": json.loads((folder / "meta.json").read_text())["key"],
                                          "images": cache.image_records(sorted((tiny_scene / "images").iterdir()))})
    assert extract_clip(tiny_scene, cfg) == folder
    after = np.load(folder / "00.npy")
    assert not np.allclose(before, after)
    assert json.loads((folder / "meta.json").read_text())["images"][0]["mtime_ns"] == 1


class Interrupted(Exception):
    """Stands for a kill in the middle of image 2."""


def test_interrupted_extraction_resumes(tiny_scene, monkeypatch):
    cfg = builtin_config()
    import ovs3d.features.extract as extract_module

    calls = []
    killed = []
    real = extract_module.extract_hierarchy

    def failing(image, encoder, config, image_index=0):
        calls.append(image_index)
        if image_index == 2 and not killed:
            killed.append(True)
            raise Interrupted
        return real(image, encoder, config, image_index)

    monkeypatch.setattr(extract_module, "extract_hierarchy", failing)
    with pytest.raises(Interrupted):
        extract_clip(tiny_scene, cfg)
    folder = next((tiny_scene / "features").iterdir())
    assert sorted(p.name for p in folder.glob("*.npy")) == ["00.npy", "01.npy"]
    assert not list(folder.glob("*.tmp")) and not cache.is_complete(folder)
    calls.clear()
    extract_clip(tiny_scene, cfg)
    assert calls == [2]  # only the missing image was computed
    assert cache.is_complete(folder)


def test_truncated_file_is_recomputed(tiny_scene):
    cfg = builtin_config()
    folder = extract_clip(tiny_scene, cfg)
    (folder / "01.npy").write_bytes(b"garbage")
    np.save(folder / "02.npy", np.load(folder / "02.npy").transpose(2, 3, 0, 1))  # an earlier, channel-first file
    assert not cache.is_complete(folder)
    extract_clip(tiny_scene, cfg)
    assert np.load(folder / "01.npy").shape == np.load(folder / "02.npy").shape == (16, 20, 3, 13)


def resident_file_kb() -> int:
    """This process's resident file-backed memory (RssFile of /proc/self/status), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status (not Linux)")


def test_sampling_keeps_no_cache_pages_resident(tmp_path):
    """Reads map a file only for their own duration: after sampling every pixel of a 24 MB cache, the
    process holds (almost) none of it, however many times it is read."""
    rng = np.random.default_rng(0)
    h, w = 128, 160
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        path.write_bytes(b"x")
    meta = {"key": {"test": 1}, "images": cache.image_records(paths), "shape": [3, 128, h, w], "encoder": "random"}
    folder = cache.fill_cache(tmp_path / "clip", meta, paths, (3, 128, h, w),
                              lambda i: rng.standard_normal((3, 128, h, w)).astype(np.float16))
    maps = cache.FeatureMaps(folder)
    u, v = (np.arange(w * h) % w + 0.5) / w, (np.arange(w * h) // w + 0.5) / h
    maps.sample(0, u[:10], v[:10])  # warm-up: library code pages
    before = resident_file_kb()
    for view in range(3):
        for _ in range(2):
            assert maps.sample(view, u, v).shape == (h * w, 3, 128)
    file_kb = 3 * (folder / "0.npy").stat().st_size // 1024
    assert resident_file_kb() - before < file_kb // 20


def test_dino_maps_cached_in_their_own_folder(tiny_scene):
    cfg = builtin_config()
    folder = extract_dino(tiny_scene, cfg)
    assert folder.name.startswith("dino-builtin-")
    maps = cache.FeatureMaps(folder)
    assert maps.encoder == ColorKernelExtractor.name == "builtin-color-kernel (not DINO)"
    shape = (ColorKernelExtractor.feature_dim, 4, 5)
    assert maps.shape == shape and maps.dense(0).shape == shape
    assert extract_dino(tiny_scene, cfg) == folder


def test_store_grid_area_mean_then_normalise():
    h = torch.rand(3, 4, 6, 8)
    out = store_grid(h, 2)
    assert out.shape == (3, 4, 3, 4)
    block = h[:, :, 2:4, 4:6].mean(dim=(2, 3))
    assert torch.allclose(out[:, :, 1, 2], block / block.norm(dim=1, keepdim=True), atol=1e-6)


def test_cli_extract_then_relevancy(tiny_scene, tmp_path):
    """``ovs3d extract`` fills both caches; ``ovs3d relevancy`` reads the view from the cache and writes
    one map per (scale, class) plus the sheet; a view out of range is a clear error (exit 2)."""
    from ovs3d.cli.main import entrypoint

    common = ["--extract.clip.kind", "builtin", "--extract.dino.kind", "builtin",
              "--extract.pyramid.divisors", "2", "3", "4"]
    entrypoint(["extract", "--data", str(tiny_scene), *common])
    folders = sorted(p.name.split("-")[0] for p in (tiny_scene / "features").iterdir())
    assert folders == ["clip", "dino"]
    classes = tmp_path / "classes.txt"
    classes.write_text("red ball\nblue box\n")
    out = tmp_path / "rel"
    entrypoint(["relevancy", "--data", str(tiny_scene), "--view", "1", "--classes-file", str(classes),
                "--out", str(out), *common])
    assert sorted(p.name for p in out.glob("*_*.png")) == [f"{s}_{c}.png" for s in range(3) for c in range(2)]
    index = json.loads((out / "index.json").read_text())
    assert index["encoder"] == "builtin-color-words (not CLIP)" and index["classes"] == ["red ball", "blue box"]
    from PIL import Image

    red = np.asarray(Image.open(out / "0_0.png"))
    assert red[:, :8].mean(axis=(0, 1))[0] > red[:, -8:].mean(axis=(0, 1))[0]  # red is hot on the left
    assert (out / "sheet.png").is_file()
    with pytest.raises(SystemExit) as exit_info:
        entrypoint(["relevancy", "--data", str(tiny_scene), "--view", "7", "--classes-file", str(classes),
                    "--out", str(out), *common])
    assert exit_info.value.code == 2


def test_real_backends_round_trip_and_weights_change_invalidate(tiny_scene, tiny_clip_weights, small_dino_weights,
                                                                tmp_path):
    """open_clip and timm (random weights from files) through the cache: shapes, float16, determinism;
    other weights (a new file content) select another cache, never the old one."""
    import open_clip

    clip_path, _ = tiny_clip_weights
    dino_path, _ = small_dino_weights
    cfg = ExtractConfig(clip=ClipConfig(model="ovs3d-test-tiny", weights=clip_path),
                        dino=DinoConfig(model="vit_small_patch8_224.dino", weights=dino_path))
    cfg.pyramid.divisors = (2, 3, 4)
    clip_folder = extract_clip(tiny_scene, cfg)
    meta = json.loads((clip_folder / "meta.json").read_text())
    assert meta["encoder"] == "openclip ovs3d-test-tiny (tiny.pt)" and meta["shape"] == [3, 32, 16, 20]
    first = np.load(clip_folder / "00.npy")
    assert first.dtype == np.float16 and np.isfinite(first).all()
    dino_folder = extract_dino(tiny_scene, cfg)
    assert np.load(dino_folder / "02.npy", mmap_mode="r").shape == (4, 5, 384)
    # same config in a fresh scene copy: identical bytes (deterministic)
    copy = tmp_path / "copy"
    (copy / "images").mkdir(parents=True)
    for p in (tiny_scene / "images").iterdir():
        (copy / "images" / p.name).write_bytes(p.read_bytes())
    np.testing.assert_array_equal(np.load(extract_clip(copy, cfg) / "00.npy"), first)
    # other weights: another key, another folder, other features
    torch.manual_seed(1)
    torch.save(open_clip.create_model("ovs3d-test-tiny").state_dict(), tmp_path / "other.pt")
    cfg.clip.weights = tmp_path / "other.pt"
    other = extract_clip(tiny_scene, cfg)
    assert other != clip_folder and not np.array_equal(np.load(other / "00.npy"), first)
