"""Stage-1 hot path: the shading MLP in bf16 and compiled (with fallbacks), fused Adam."""

from __future__ import annotations

import torch

from ovs3d.field import shading
from ovs3d.field.tensorf import TensoRF
from ovs3d.scene.rayspace import NDCSpace


def small_field() -> TensoRF:
    return TensoRF(NDCSpace(), (8, 8, 8))


def inputs(n: int = 500):
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(n, 27, generator=gen)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    return features, dirs


def test_auto_precision_follows_native_bf16(monkeypatch):
    monkeypatch.setattr("ovs3d.device.cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert shading.resolve_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr("ovs3d.device.cpu_flags", lambda: frozenset({"avx2"}))
    assert shading.resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert shading.resolve_precision("bf16", torch.device("cpu")) == "bf16"


def test_bf16_shading_follows_fp32_with_fp32_colour_and_gradients():
    field = small_field()
    features, dirs = inputs()
    features.requires_grad_(True)
    want = field.shade(features, dirs)
    want.sum().backward()
    grad_want = [p.grad.clone() for p in field.mlp.parameters()]
    field.zero_grad()
    field.set_shading("bf16")
    got = field.shade(features, dirs)
    assert got.dtype == torch.float32 and (got - want).abs().max() < 0.01
    got.sum().backward()
    for p, g in zip(field.mlp.parameters(), grad_want):
        assert p.dtype == torch.float32 and p.grad.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(p.grad.flatten(), g.flatten(), dim=0) > 0.99


def test_compile_falls_back_to_eager_when_no_compiler_works(monkeypatch):
    def broken(fn, **kwargs):
        def call(*args):
            raise RuntimeError("no C++ compiler")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    lines = []
    field = small_field()
    features, dirs = inputs(50)
    want = field.shade(features, dirs)
    field.set_shading("fp32", compile=True, log=lines.append)
    assert torch.equal(field.shade(features, dirs), want) and torch.equal(field.shade(features, dirs), want)
    assert len(lines) == 1 and "running it eagerly" in lines[0]


def test_copied_field_shades_with_its_own_mlp():
    import copy

    field = small_field()
    field.set_shading("bf16")
    twin = copy.deepcopy(field)
    with torch.no_grad():
        twin.mlp[-1].bias.fill_(5.0)
    features, dirs = inputs(20)
    assert not torch.allclose(twin.shade(features, dirs), field.shade(features, dirs))


def test_stage1_uses_fused_adam_and_the_configured_shading(synthetic_scene, tmp_path):
    from ovs3d.train.configs import preset
    from ovs3d.train.reconstruct import Reconstruction

    cfg = preset("reconstruct", "test", n_iters=2, mlp_precision="bf16")
    run = Reconstruction(synthetic_scene, tmp_path / "run", cfg, log=lambda line: None)
    assert run.optimizer.defaults["fused"]
    features, dirs = inputs(30)
    reference = small_field()
    reference.mlp.load_state_dict(run.field.mlp.state_dict())
    reference.set_shading("bf16")
    assert torch.equal(run.field.shade(features, dirs), reference.shade(features, dirs))
    run.train_step()
    assert run.iteration == 1
