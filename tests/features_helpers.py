"""Shared fixtures of the feature tests (import them into a test module to use them there)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Small tensors: one thread avoids thread hand-off costs on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_CLIP = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory):
    """A registered 2-layer open_clip architecture and its random weights as a torch.save state dict."""
    import json

    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("clip")
    (folder / "ovs3d-test-tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder / "ovs3d-test-tiny.json")
    torch.manual_seed(0)
    model = open_clip.create_model("ovs3d-test-tiny")
    torch.save(model.state_dict(), folder / "tiny.pt")
    return folder / "tiny.pt", model.eval()


@pytest.fixture(scope="session")
def small_dino_weights(tmp_path_factory):
    """Random timm ViT-S/8 (DINO layout) weights as safetensors, and the model itself."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch8_224.dino", pretrained=False, num_classes=0)
    path = tmp_path_factory.mktemp("dino") / "dino_small.safetensors"
    save_file(model.state_dict(), path)
    return path, model.eval()
