"""Encoders: the built-in weight-free ones (known answers, synthetic-scene accuracy) and the real
open_clip / timm loading code driven with randomly initialised weights saved to a temporary file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ovs3d.errors import InputError
from ovs3d.features.builtin import ColorKernelExtractor, ColorWordEncoder, srgb_to_lab
from ovs3d.features.encoders import ClipConfig, DenseFeatureExtractor, DinoConfig, ImageTextEncoder
from ovs3d.features.registry import build_dense_extractor, build_image_text_encoder
from ovs3d.features.relevancy import relevancy, text_embeddings
from features_helpers import single_thread, small_dino_weights, tiny_clip_weights  # noqa: F401  (fixtures)


def solid(rgb, size=16) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_builtin_encoders_follow_the_protocols():
    cpu = torch.device("cpu")
    clip = build_image_text_encoder(ClipConfig(kind="builtin"), cpu)
    dino = build_dense_extractor(DinoConfig(kind="builtin"), cpu)
    assert isinstance(clip, ImageTextEncoder) and isinstance(dino, DenseFeatureExtractor)
    assert "(not CLIP)" in clip.name and "(not DINO)" in dino.name


def test_color_words_rank_like_clip_for_known_words():
    enc = ColorWordEncoder()
    prompts = ["red ball", "blue box", "brown wooden floor", "grey stone wall", "green cylinder"]
    text = text_embeddings(enc, prompts)
    assert text.shape == (5, enc.embedding_dim)
    colours = [(0.85, 0.12, 0.1), (0.15, 0.3, 0.85), (0.6, 0.4, 0.22), (0.55, 0.55, 0.57), (0.15, 0.65, 0.2)]
    images = torch.cat([solid(c) for c in colours])
    emb = enc.encode_images(images)
    assert emb.shape == (5, enc.embedding_dim) and torch.allclose(emb.sum(1), torch.ones(5), atol=1e-5)
    cos = torch.nn.functional.normalize(emb, dim=1) @ text.T
    assert torch.equal(cos.argmax(1), torch.arange(5))  # each colour picks its own prompt
    shaded = enc.encode_images(solid((0.62, 0.09, 0.07)))  # a red surface in light shade is still red
    assert (torch.nn.functional.normalize(shaded, dim=1) @ text.T).argmax() == 0


@pytest.mark.parametrize("lit, shadowed, name", [((0.85, 0.12, 0.10), (0.35, 0.05, 0.04), "red"),
                                                 ((0.92, 0.82, 0.12), (0.40, 0.36, 0.05), "yellow"),
                                                 ((0.15, 0.30, 0.85), (0.06, 0.12, 0.34), "blue")])
def test_shadowed_colours_keep_their_name(lit, shadowed, name):
    """The colour assignment is shading-invariant: a surface at 40 % of its brightness is still mostly
    assigned to its own prototype (before the fix a shadowed red or yellow went to "brown")."""
    from ovs3d.features.builtin import PROTOTYPES, SoftColorAssignment

    assign = SoftColorAssignment(torch.device("cpu"))
    pixels = torch.tensor([lit, shadowed]).T.reshape(1, 3, 1, 2)
    weights = assign(pixels)[0, :, 0]  # [K, 2]
    k = PROTOTYPES.index(name)
    assert weights[:, 0].argmax() == k and weights[:, 1].argmax() == k, weights[:, 1]


def test_unknown_prompt_is_flagged():
    enc = ColorWordEncoder()
    with pytest.warns(UserWarning, match="no known colour or material word"):
        text = enc.encode_texts(["a wicker chair", "red ball"])
    assert enc.unknown_prompts == ["a wicker chair"]
    assert torch.allclose(text[0], torch.full_like(text[0], 1 / enc.embedding_dim))


def test_color_kernel_extractor_shape_and_affinity():
    ext = ColorKernelExtractor()
    image = torch.zeros(1, 3, 16, 24)
    image[..., :12] = torch.tensor([0.85, 0.1, 0.1]).view(3, 1, 1)
    image[..., 12:] = torch.tensor([0.15, 0.3, 0.85]).view(3, 1, 1)
    out = ext.extract(image)
    assert out.shape == (1, ext.feature_dim, 2, 3)
    f = torch.nn.functional.normalize(out[0].flatten(1), dim=0)  # [D, 6]
    assert f[:, 0] @ f[:, 3] > 0.99  # same surface
    assert f[:, 0] @ f[:, 2] < 0.2  # red against blue
    with pytest.raises(InputError, match="multiple of 8"):
        ext.extract(torch.zeros(1, 3, 12, 16))


def test_color_kernel_cosine_crosses_dino_shift_at_the_match_distance():
    """cos(z(x), z(y)) ~= exp(-|x - y|^2 / (2 s^2)), 0.7 at |x - y| = d0: near colours pull, far ones push."""
    ext = ColorKernelExtractor()
    base = torch.tensor([0.5, 0.4, 0.3])
    lab = srgb_to_lab(base.view(1, 3, 1, 1))
    phi0 = ext.phi(lab).flatten()
    cosines = []
    for mix in (0.02, 0.1, 0.25, 0.6):
        other = (1 - mix) * base + mix * torch.tensor([0.1, 0.6, 0.2])  # toward green
        image = torch.cat([base.view(3, 1, 1).expand(3, 8, 8), other.view(3, 1, 1).expand(3, 8, 8)], dim=2)[None]
        f = torch.nn.functional.normalize(ext.extract(image)[0].flatten(1), dim=0)
        distance = float((ext.phi(srgb_to_lab(other.view(1, 3, 1, 1))).flatten() - phi0).norm())
        expected = math.exp(-distance**2 * math.log(1 / 0.7) / ext.match_distance**2)
        cosines.append(float(f[:, 0] @ f[:, 1]))
        assert abs(cosines[-1] - expected) < 0.1
    assert cosines == sorted(cosines, reverse=True) and cosines[0] > 0.9 and cosines[-1] < 0.5


def test_color_kernel_token_describes_its_block_centre():
    """A block whose centre lies on a small red patch is red, though most of its pixels are blue."""
    ext = ColorKernelExtractor()
    image = torch.tensor([0.15, 0.3, 0.85]).view(1, 3, 1, 1).repeat(1, 1, 16, 16)
    image[..., 2:7, 2:7] = torch.tensor([0.85, 0.1, 0.1]).view(3, 1, 1)  # 25 of block (0, 0)'s 64 pixels
    f = torch.nn.functional.normalize(ext.extract(image)[0].flatten(1), dim=0)  # [D, 4]
    assert f[:, 0] @ f[:, 3] < 0.2  # the red-centred block against a plain blue one
    assert f[:, 1] @ f[:, 3] > 0.99


def test_relevancy_is_minmax_per_scale_and_class():
    gen = torch.Generator().manual_seed(0)
    feats = torch.nn.functional.normalize(torch.randn(3, 8, 5, 6, generator=gen), dim=1)
    text = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=1)
    rel = relevancy(feats, text)
    assert rel.shape == (3, 4, 5, 6)
    flat = rel.flatten(2)
    assert torch.allclose(flat.amin(-1), torch.zeros(3, 4)) and torch.allclose(flat.amax(-1), torch.ones(3, 4))
    raw = torch.einsum("sdhw,cd->schw", feats, text)
    assert torch.equal(rel.flatten(2).argmax(-1), raw.flatten(2).argmax(-1))


def test_builtin_argmax_accuracy_on_synthetic_scene(synthetic_scene):
    """2D argmax over the scene's classes from the built-in hierarchy, per annotated view, against the GT.

    Measured (seed-0 fixture, 96x72, `python -m bench.builtin_features`): accuracy 0.959-0.965 per view,
    mIoU 0.836; asserted with margin."""
    from ovs3d.eval.segmentation import evaluate_3dovs
    from ovs3d.features.extract import normalize
    from ovs3d.features.pyramid import PyramidConfig, extract_hierarchy
    from ovs3d.features.relevancy import label_map
    from ovs3d.scene.load import load_scene

    scene = load_scene(synthetic_scene)
    ann = scene.annotations
    enc = ColorWordEncoder()
    text = text_embeddings(enc, ann.classes)
    assert not enc.unknown_prompts  # every synthetic prompt has a known word
    labels = []
    for view in ann.views:
        image = torch.from_numpy(scene.images[view]).permute(2, 0, 1).contiguous()
        features = normalize(extract_hierarchy(image, enc, PyramidConfig(seed=0), view), dim=1)
        labels.append(label_map(features, text).numpy())
    result = evaluate_3dovs(np.stack(labels), ann.labels, ann.views, ann.classes)
    assert min(result.accuracy_per_view) >= 0.93, result.accuracy_per_view
    assert result.miou >= 0.78, result.miou_per_view


# ---- real backends, random weights saved to a temporary file ------------------------------------------


def test_openclip_loads_a_weights_file_and_is_deterministic(tiny_clip_weights):
    path, reference = tiny_clip_weights
    config = ClipConfig(model="ovs3d-test-tiny", weights=path, precision="fp32")
    a = build_image_text_encoder(config, torch.device("cpu"))
    b = build_image_text_encoder(config, torch.device("cpu"))
    assert isinstance(a, ImageTextEncoder) and a.name == "openclip ovs3d-test-tiny (tiny.pt)"
    assert a.embedding_dim == 32 and a.input_size == 32
    crops = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    emb = a.encode_images(crops)
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    assert torch.equal(emb, b.encode_images(crops))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = reference.encode_image((crops - mean) / std)
    assert torch.allclose(emb, want, atol=1e-5)  # the file's weights, CLIP's normalisation
    text = a.encode_texts(["red ball", "blue box"])
    assert text.shape == (2, 32) and text.dtype == torch.float32
    assert not torch.allclose(text[0], text[1])


def test_openclip_preprocess_resizes_short_side_and_centre_crops(tiny_clip_weights):
    enc = build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=tiny_clip_weights[0]), torch.device("cpu"))
    wide = torch.rand(1, 3, 16, 24)
    out = enc.preprocess(wide)
    assert out.shape == (1, 3, 32, 32)
    resized = torch.nn.functional.interpolate(wide, size=(32, 48), mode="bicubic", antialias=True).clamp(0, 1)
    assert torch.allclose(out * enc.std + enc.mean, resized[..., 8:40], atol=1e-6)


def test_openclip_rejects_a_prompt_longer_than_the_context(tiny_clip_weights):
    enc = build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=tiny_clip_weights[0]), torch.device("cpu"))
    with pytest.raises(InputError, match="more than CLIP's context of 77"):
        enc.encode_texts(["red " * 80])


def test_openclip_vit_b16_from_a_safetensors_file(tmp_path):
    """The paper's architecture through the real loading path (tag openai -> QuickGELU, OpenAI mean/std)."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16", force_quick_gelu=True)
    save_file(model.state_dict(), tmp_path / "vit_b16.safetensors")
    enc = build_image_text_encoder(ClipConfig(weights=tmp_path / "vit_b16.safetensors"), torch.device("cpu"))
    assert enc.embedding_dim == 512 and enc.input_size == 224
    emb = enc.encode_images(torch.rand(2, 3, 37, 37, generator=torch.Generator().manual_seed(0)))
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()
    assert enc.encode_texts(["brown wooden floor"]).shape == (1, 512)


def test_missing_weights_fail_fast_naming_the_option(monkeypatch, tmp_path):
    from ovs3d.errors import WeightsUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip either
    with pytest.raises(WeightsUnavailableError, match="ViT-B-16.*--extract.clip.weights"):
        build_image_text_encoder(ClipConfig(), torch.device("cpu"))
    with pytest.raises(WeightsUnavailableError, match="vit_base_patch8_224.dino.*--extract.dino.weights"):
        build_dense_extractor(DinoConfig(), torch.device("cpu"))
    with pytest.raises(InputError, match="does not exist"):
        build_image_text_encoder(ClipConfig(weights=tmp_path / "nope.pt"), torch.device("cpu"))


def test_timm_dino_last_block_before_norm_any_multiple_of_8(small_dino_weights):
    path, reference = small_dino_weights
    ext = build_dense_extractor(DinoConfig(model="vit_small_patch8_224.dino", weights=path, precision="fp32"),
                                torch.device("cpu"))
    assert isinstance(ext, DenseFeatureExtractor) and ext.stride == 8 and ext.feature_dim == 384
    images = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(2))
    out = ext.extract(images)
    assert out.shape == (2, 384, 5, 7) and out.dtype == torch.float32
    assert torch.equal(out, ext.extract(images))
    # by hand: patch embedding + interpolated position embedding, all blocks, no final norm, drop CLS
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    reference.set_input_size(img_size=(40, 56))
    with torch.no_grad():
        x = reference.patch_embed((images - mean) / std)
        x = reference._pos_embed(x)
        x = reference.blocks(reference.norm_pre(x))
    want = x[:, reference.num_prefix_tokens:].reshape(2, 5, 7, 384).permute(0, 3, 1, 2)
    assert torch.allclose(out, want, atol=1e-4)
    with pytest.raises(InputError, match="multiple of the patch size 8"):
        ext.extract(torch.rand(1, 3, 36, 56))
