"""Property-based hardening of every loader: mutated and truncated input files give InputError or a valid
result, never another exception (nor a hang, nor code execution, nor a file opened outside the scene).

Each loader gets a few hundred generated cases (hypothesis, derandomized: the same cases on every run,
no example database; ``OVS3D_FUZZ_SCALE=20`` multiplies them for a deeper run by hand). The scenes are
tiny (4 views of 32x24) and built once per module.
"""

from __future__ import annotations

import faulthandler
import json
import os
import pickle
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from ovs3d.errors import InputError
from ovs3d.features import cache
from ovs3d.features.hub import read_weights_file
from ovs3d.io.images import image_size, open_image, read_rgb
from ovs3d.scene import annotations
from ovs3d.scene.annotations import load_annotations, read_classes
from ovs3d.scene.colmap import ovs3d_to_colmap
from ovs3d.scene.colmap_sfm import read_model
from ovs3d.scene.llff import read_poses_bounds
from ovs3d.scene.load import load_scene
from ovs3d.scene.nerfstudio import read_transforms, write_transforms
from ovs3d.scene.synthetic import make_synthetic_scene

set_hypothesis_home_dir(tempfile.mkdtemp(prefix="ovs3d-hypothesis-"))  # no .hypothesis/ in the repository

N_VIEWS, W, H = 4, 32, 24


def fuzz(examples: int):
    """Deterministic hypothesis settings: ``examples`` cases (times ``OVS3D_FUZZ_SCALE``, default 1, for a
    deeper run by hand), no deadline, no example database."""
    scale = int(os.environ.get("OVS3D_FUZZ_SCALE", "1"))
    return settings(max_examples=examples * scale, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


NOISE = np.random.default_rng(0).bytes(64)


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """``data`` truncated, with bytes flipped, overwritten, inserted or deleted (edits biased towards the
    first 256 bytes, where the headers are), or replaced by other content entirely."""
    n = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "replace"]))
    position = draw(st.one_of(st.integers(0, max(0, min(n, 256) - 1)), st.integers(0, max(0, n - 1))))
    if kind == "truncate":
        return data[:position]
    if kind == "flip":
        out = bytearray(data)
        for offset in draw(st.lists(st.integers(0, max(0, n - 1)), min_size=1, max_size=6)) + [position]:
            out[offset] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if kind == "overwrite":
        chunk = draw(st.binary(min_size=1, max_size=16))
        return data[:position] + chunk + data[position + len(chunk):]
    if kind == "insert":
        return data[:position] + draw(st.binary(min_size=1, max_size=32)) + data[position:]
    if kind == "delete":
        return data[:position] + data[position + draw(st.integers(1, 64)):]
    return draw(st.sampled_from([b"", b"\n", b"<!DOCTYPE html><html><body>404</body></html>", b"PK\x03\x04junk",
                                 b"\x93NUMPY\x01\x00", b"\x80\x02}q\x00.", data[::-1], NOISE]))


def accepted(call):
    """The value of ``call()``, or None when it raised InputError (with a fix); anything else fails."""
    try:
        return call()
    except InputError as err:
        assert err.fix and "Fix:" in str(err)
        return None


@contextmanager
def copy_of(base: Path):
    """A private copy of the scene folder ``base``, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="ovs3d-fuzz-") as tmp:
        yield Path(shutil.copytree(base, Path(tmp) / "scene", symlinks=True))


@contextmanager
def quiet():
    """Loader warnings (distortion ignored, bounds from the layout, images left out) are expected here."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextmanager
def watchdog(seconds: float = 120.0):
    """Abort the run with a traceback instead of hanging forever inside a C reader."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


# ---- scenes, built once ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llff(tmp_path_factory) -> Path:
    return make_synthetic_scene(tmp_path_factory.mktemp("llff") / "scene", n_views=N_VIEWS, width=W, height=H,
                                n_annotated=2, supersample=1)


@pytest.fixture(scope="module")
def reference(llff):
    """The LLFF scene loaded once: cameras to write the other formats from."""
    return load_scene(llff)


@pytest.fixture(scope="module")
def nerfstudio(llff, reference, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nerfstudio") / "scene"
    shutil.copytree(llff / "images", root / "images")
    shutil.copytree(llff / "segmentations", root / "segmentations")
    cams = reference.cameras
    intrinsics = np.stack([cams.fx.numpy(), cams.fy.numpy(), cams.cx.numpy(), cams.cy.numpy()], axis=1)
    intrinsics = np.broadcast_to(intrinsics, (N_VIEWS, 4)) if intrinsics.shape[0] == 1 else intrinsics
    write_transforms(root / "transforms.json", [root / "images" / p.name for p in reference.image_paths],
                     cams.c2w.double().numpy(), intrinsics, (W, H), reference.bounds.astype(np.float64))
    return root


def write_text_model(folder: Path, reference) -> None:
    """A COLMAP text model of the reference cameras: one PINHOLE camera, 24 points seen by every view."""
    from scipy.spatial.transform import Rotation

    folder.mkdir(parents=True)
    cams = reference.cameras
    fx, fy, cx, cy = (float(v.reshape(-1)[0]) for v in (cams.fx, cams.fy, cams.cx, cams.cy))
    w2c = ovs3d_to_colmap(cams.c2w.double().numpy())
    c2w0 = cams.c2w[0].double().numpy()
    rng = np.random.default_rng(0)
    offsets = rng.uniform(-0.3, 0.3, (24, 2))
    depth = rng.uniform(2.0, 4.0, 24)
    points = c2w0[:, 3] - depth[:, None] * c2w0[:, 2] + offsets[:, :1] * c2w0[:, 0] + offsets[:, 1:] * c2w0[:, 1]
    (folder / "cameras.txt").write_text(f"1 PINHOLE {W} {H} {fx} {fy} {cx} {cy}\n")
    lines, tracks = [], {i: [] for i in range(len(points))}
    for k, name in enumerate(p.name for p in reference.image_paths):
        q = Rotation.from_matrix(w2c[k, :, :3]).as_quat()
        t = w2c[k, :, 3]
        observed = []
        for i, p in enumerate(points):
            x = w2c[k, :, :3] @ p + t
            assert x[2] > 0
            tracks[i].append((k + 1, len(observed)))
            observed.append(f"{fx * x[0] / x[2] + cx} {fy * x[1] / x[2] + cy} {i + 1}")
        lines.append(f"{k + 1} {q[3]} {q[0]} {q[1]} {q[2]} {t[0]} {t[1]} {t[2]} 1 {name}\n" + " ".join(observed))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    (folder / "points3D.txt").write_text("\n".join(
        f"{i + 1} {p[0]} {p[1]} {p[2]} 128 128 128 0.5 " + " ".join(f"{a} {b}" for a, b in tracks[i])
        for i, p in enumerate(points)) + "\n")


@pytest.fixture(scope="module")
def colmap(llff, reference, tmp_path_factory) -> Path:
    """images/ + sparse/0 (binary, as COLMAP writes it) + the same model as text in sparse_txt/."""
    pycolmap = pytest.importorskip("pycolmap")
    root = tmp_path_factory.mktemp("colmap") / "scene"
    shutil.copytree(llff / "images", root / "images")
    write_text_model(root / "sparse_txt", reference)
    (root / "sparse" / "0").mkdir(parents=True)
    pycolmap.Reconstruction(str(root / "sparse_txt")).write_binary(str(root / "sparse" / "0"))
    return root


# ---- the untouched scenes load -----------------------------------------------------------------------


def test_the_fixture_scenes_load(llff, nerfstudio, colmap, reference):
    for root in (llff, nerfstudio, colmap):
        scene = load_scene(root, load_annotations=root != colmap)
        assert len(scene.image_paths) == N_VIEWS and np.isfinite(scene.cameras.c2w.numpy()).all()
    assert len(read_model(colmap / "sparse_txt").names) == N_VIEWS


# ---- poses_bounds.npy ------------------------------------------------------------------------------


@fuzz(250)
@given(data=st.data())
def test_poses_bounds_mutations(llff, data):
    original = (llff / "poses_bounds.npy").read_bytes()
    with copy_of(llff) as root:
        (root / "poses_bounds.npy").write_bytes(data.draw(mutated(original)))
        parsed = accepted(lambda: read_poses_bounds(root / "poses_bounds.npy", N_VIEWS))
        if parsed is not None:
            c2w, bounds, (h, w, f) = parsed
            assert c2w.shape == (N_VIEWS, 3, 4) and np.isfinite(c2w).all() and (bounds > 0).all()
            scene = accepted(lambda: load_scene(root, load_annotations=False))
            if scene is not None:
                assert np.isfinite(scene.cameras.c2w.numpy()).all()


@pytest.mark.parametrize("content", [
    b"1 2 3\n4 5 6\n",                                         # a text file
    pickle.dumps(np.zeros((4, 17))),                           # a pickle
    None,                                                      # an object array (needs pickle)
])
def test_poses_bounds_never_unpickled(llff, tmp_path, content):
    root = Path(shutil.copytree(llff, tmp_path / "scene"))
    if content is None:
        np.save(root / "poses_bounds.npy", np.array([{"a": 1}] * 4, dtype=object), allow_pickle=True)
    else:
        (root / "poses_bounds.npy").write_bytes(content)
    with pytest.raises(InputError) as info:
        load_scene(root)
    assert info.value.path == root / "poses_bounds.npy"
    assert "allow_pickle" not in str(info.value) and "pickle.load" not in str(info.value)


# ---- transforms.json -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10)


def json_paths(value, prefix=()):
    """Every (key/index path) of a parsed JSON document."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from json_paths(item, prefix + (index,))


@st.composite
def edited_json(draw, document):
    """``document`` with one to three edits: a value replaced (by any JSON value or a plausible one),
    a key or list item deleted, or a list cut short."""
    import copy

    doc = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(json_paths(doc))
        path = draw(st.sampled_from(paths))
        if not path:
            doc = draw(json_values)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "plausible", "delete", "cut"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "plausible":
            parent[path[-1]] = draw(st.sampled_from([0, -1, 1e308, float("nan"), float("inf"), 3.5, "10",
                                                     [], {}, None, True, [[1, 0], [0, 1]], "../x.png",
                                                     "/etc/passwd", "images/00.png", 2 ** 64]))
        elif action == "delete":
            del parent[path[-1]]
        else:
            target = parent[path[-1]]
            if isinstance(target, list):
                del target[draw(st.integers(0, len(target))):]
    return doc


@fuzz(250)
@given(data=st.data())
def test_transforms_json_edits(nerfstudio, data):
    document = json.loads((nerfstudio / "transforms.json").read_text())
    with copy_of(nerfstudio) as root:
        (root / "transforms.json").write_text(json.dumps(data.draw(edited_json(document))))
        with quiet():
            scene = accepted(lambda: load_scene(root))
        if scene is not None:
            assert np.isfinite(scene.cameras.c2w.numpy()).all() and np.isfinite(scene.bounds).all()


@fuzz(150)
@given(data=st.data())
def test_transforms_json_byte_mutations(nerfstudio, data):
    original = (nerfstudio / "transforms.json").read_bytes()
    with copy_of(nerfstudio) as root:
        (root / "transforms.json").write_bytes(data.draw(mutated(original)))
        with quiet():
            accepted(lambda: read_transforms(root / "transforms.json"))


def test_fewer_frames_than_images_says_what_to_do(nerfstudio, tmp_path):
    root = Path(shutil.copytree(nerfstudio, tmp_path / "scene"))
    document = json.loads((root / "transforms.json").read_text())
    document["frames"] = document["frames"][:3]
    (root / "transforms.json").write_text(json.dumps(document))
    with pytest.raises(InputError) as info:  # annotated: the view indices would not count images/
        load_scene(root)
    assert "03.png" in str(info.value) and "move the images without a frame out of images/" in info.value.fix
    shutil.move(root / "images" / "03.png", tmp_path / "03.png")  # doing what the fix says works
    shutil.move(root / "segmentations" / "03", tmp_path / "03")  # (its annotation goes with it)
    assert len(load_scene(root).image_paths) == 3
    shutil.move(tmp_path / "03.png", root / "images" / "03.png")
    with pytest.warns(UserWarning, match="03.png.*left out"):  # without annotations: a warning
        assert len(load_scene(root, load_annotations=False).image_paths) == 3


# ---- COLMAP models ---------------------------------------------------------------------------------

BIN_FILES = ["cameras.bin", "images.bin", "points3D.bin", "rigs.bin", "frames.bin"]


@fuzz(300)
@given(data=st.data())
def test_colmap_binary_mutations(colmap, data):
    name = data.draw(st.sampled_from(BIN_FILES))
    original = (colmap / "sparse" / "0" / name).read_bytes()
    with copy_of(colmap) as root, watchdog():
        (root / "sparse" / "0" / name).write_bytes(data.draw(mutated(original)))
        model = accepted(lambda: read_model(root / "sparse" / "0"))
        if model is not None:
            assert np.isfinite(model.cam_from_world).all() and (model.fx > 0).all()
            with quiet():
                accepted(lambda: load_scene(root, load_annotations=False))


@fuzz(120)
@given(data=st.data())
def test_colmap_text_mutations(colmap, data):
    name = data.draw(st.sampled_from(["cameras.txt", "images.txt", "points3D.txt"]))
    original = (colmap / "sparse_txt" / name).read_bytes()
    with copy_of(colmap) as root, watchdog():
        (root / "sparse_txt" / name).write_bytes(data.draw(mutated(original)))
        accepted(lambda: read_model(root / "sparse_txt"))


@pytest.mark.parametrize("name", ["cameras.bin", "images.bin", "points3D.bin"])
def test_colmap_empty_and_padded_files(colmap, tmp_path, name):
    """An empty points3D.bin made pycolmap read forever; a half cameras.bin was silently accepted."""
    root = Path(shutil.copytree(colmap, tmp_path / "scene"))
    target = root / "sparse" / "0" / name
    original = target.read_bytes()
    for content in (b"", original[: len(original) // 2], original + b"\x00" * 8):
        target.write_bytes(content)
        with watchdog(60), pytest.raises(InputError) as info:
            read_model(root / "sparse" / "0")
        assert info.value.path == target


# ---- classes.txt, prompts and masks ----------------------------------------------------------------


@fuzz(200)
@given(data=st.data())
def test_class_list_bytes(llff, data):
    original = (llff / "segmentations" / "classes.txt").read_bytes()
    content = data.draw(st.one_of(mutated(original), st.binary(max_size=64),
                                  st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "classes.txt"
        path.write_bytes(content)
        classes = accepted(lambda: read_classes(path))
        if classes is not None:
            assert classes and all(c and c == c.strip() for c in classes) and len(set(classes)) == len(classes)


@fuzz(200)
@given(prompts=st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"),
                                min_size=1, max_size=40),
                       min_size=1, max_size=4), data=st.data())
def test_any_prompt_reads_only_masks_inside_the_view_folder(monkeypatch_module, prompts, data):
    """Whatever classes.txt says, the loader opens only regular files listed in a view folder."""
    opened = monkeypatch_module
    opened.clear()
    use_manifest = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seg = root / "segmentations"
        (seg / "00").mkdir(parents=True)
        (root / "images").mkdir()
        Image.new("L", (8, 4), 255).save(root / "images" / "00.png")  # a decoy outside segmentations/
        (seg / "classes.txt").write_text("\n".join(prompts) + "\n", encoding="utf-8", errors="surrogatepass")
        manifest = {}
        for i, prompt in enumerate(p.strip() for p in prompts):
            if not prompt:
                continue
            name, _ = annotations.default_mask_name(prompt)
            if use_manifest or name is None:
                name = manifest[prompt] = f"mask {i}.png"
            Image.new("L", (8, 4), 255).save(seg / "00" / name, format="PNG")
        if manifest:
            (seg / "masks.json").write_text(json.dumps(manifest))
        ann = accepted(lambda: load_annotations(root, n_images=2, size=(8, 4), source_size=(8, 4)))
        for path in opened:
            assert path.parent == seg / "00" and path.is_file() and not path.is_symlink()
        if ann is not None:
            assert ann.labels.shape[-1] == len(ann.classes)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """Records every path the annotation loader decodes (module-wide, for the hypothesis test)."""
    mp = pytest.MonkeyPatch()
    opened: list[Path] = []
    real = annotations.open_image

    def spy(path, *args, **kwargs):
        opened.append(Path(path))
        return real(path, *args, **kwargs)

    mp.setattr(annotations, "open_image", spy)
    yield opened
    mp.undo()


SAVABLE = [("1", ["PNG", "BMP", "TIFF"]), ("L", ["PNG", "BMP", "TIFF"]), ("P", ["PNG", "BMP", "TIFF"]),
           ("RGB", ["PNG", "BMP", "TIFF"]), ("RGBA", ["PNG", "TIFF"]), ("LA", ["PNG"]), ("I;16", ["PNG", "TIFF"]),
           ("I", ["TIFF"]), ("F", ["TIFF"]), ("CMYK", ["TIFF"])]


@fuzz(200)
@given(data=st.data())
def test_mask_mutations(llff, data):
    masks = sorted((llff / "segmentations" / "00").iterdir())
    mask = data.draw(st.sampled_from(masks))
    with copy_of(llff) as root:
        target = root / "segmentations" / "00" / mask.name
        if data.draw(st.booleans()):
            target.write_bytes(data.draw(mutated(mask.read_bytes())))
        else:  # a well-formed image of another size or mode
            mode, formats = data.draw(st.sampled_from(SAVABLE))
            size = data.draw(st.sampled_from([(W, H), (H, W), (1, 1), (W * 2, H * 2)]))
            image = Image.new(mode, size, data.draw(st.integers(0, 255)))
            image.save(target, format=data.draw(st.sampled_from(formats)))
        ann = accepted(lambda: load_annotations(root, N_VIEWS, (W, H), (W, H)))
        if ann is not None:
            assert set(np.unique(ann.labels)) <= {0, 1}


# ---- images ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_files(llff, tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("images")
    image = Image.open(llff / "images" / "01.png").convert("RGB")
    out = {}
    for fmt in ("PNG", "JPEG", "BMP", "TIFF", "WEBP"):
        path = folder / f"x.{fmt.lower()}"
        image.save(path, format=fmt)
        out[fmt] = path.read_bytes()
    return out


@fuzz(250)
@given(data=st.data())
def test_image_mutations(image_files, data):
    fmt = data.draw(st.sampled_from(sorted(image_files)))
    content = data.draw(mutated(image_files[fmt]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"x.{fmt.lower()}"
        path.write_bytes(content)
        size = accepted(lambda: image_size(path))
        rgb = accepted(lambda: read_rgb(path, (16, 12)))
        if rgb is not None:
            assert rgb.shape == (12, 16, 3) and np.isfinite(rgb).all()
        accepted(lambda: open_image(path))


def test_decompression_bomb_is_an_input_error(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (Image.MAX_IMAGE_PIXELS // 4000 + 1000, 4000)).save(path)  # over the limit, tiny file
    for call in (image_size, open_image):
        with pytest.raises(InputError, match="too large to decode safely") as info:
            call(path)
        assert info.value.path == path


# ---- feature caches --------------------------------------------------------------------------------

CACHE_SHAPE = (2, 8, 4, 5)


def cache_value(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    array = rng.normal(size=CACHE_SHAPE).astype(np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def feature_cache(llff, tmp_path_factory):
    folder = tmp_path_factory.mktemp("cache") / "clip"
    paths = sorted((llff / "images").iterdir())
    meta = {"key": {"test": 1}, "images": cache.image_records(paths), "shape": list(CACHE_SHAPE), "encoder": "fuzz"}
    cache.fill_cache(folder, meta, paths, CACHE_SHAPE, cache_value)
    return folder, meta, paths


@fuzz(250)
@given(data=st.data())
def test_feature_cache_mutations(feature_cache, data):
    base, meta, paths = feature_cache
    names = sorted(p.name for p in base.iterdir())
    name = data.draw(st.sampled_from(names))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(base, Path(tmp) / "clip"))
        (folder / name).write_bytes(data.draw(mutated((base / name).read_bytes())))
        source = {"key": meta["key"], "images": meta["images"]}
        complete = cache.is_complete(folder, source)
        assert isinstance(complete, bool)
        maps = accepted(lambda: cache.FeatureMaps(folder))
        if maps is not None:
            for view in range(len(maps)):
                dense = accepted(lambda: maps.dense(view))
                if dense is not None:
                    assert tuple(dense.shape) == CACHE_SHAPE
                accepted(lambda: maps.sample(view, np.array([0.5]), np.array([0.5])))
        # extraction repairs whatever was damaged: a clean recompute of the damaged part, or reuse
        cache.fill_cache(folder, meta, paths, CACHE_SHAPE, cache_value)
        assert cache.is_complete(folder, source)
        repaired = cache.FeatureMaps(folder)
        for view in range(len(repaired)):
            assert repaired.dense(view).shape == CACHE_SHAPE


# ---- weights files ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_files(tmp_path_factory) -> dict[str, bytes]:
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    state = {"a.weight": torch.randn(3, 4), "b.bias": torch.zeros(2)}
    torch.save(state, folder / "zip.pt")
    torch.save(state, folder / "legacy.pt", _use_new_zipfile_serialization=False)
    save_file(state, folder / "w.safetensors")
    return {name: (folder / name).read_bytes() for name in ("zip.pt", "legacy.pt", "w.safetensors")}


MARKER = Path(tempfile.gettempdir()) / "ovs3d-fuzz-pwned"


class Boom:
    """Unpickling this would create ``MARKER`` (builtins.open): the safe loader must never do it."""

    def __reduce__(self):
        return (open, (str(MARKER), "w"))


@fuzz(250)
@given(data=st.data())
def test_weights_file_mutations(weights_files, data):
    name = data.draw(st.sampled_from(sorted(weights_files)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data.draw(mutated(weights_files[name])))
        for full in (False, True):
            state = accepted(lambda: read_weights_file(path, "--clip.weights", full=full))
            if state is not None and full:
                assert state and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    assert not MARKER.exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_code_executing_pickle_is_refused(tmp_path, protocol):
    MARKER.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"weight": Boom()}, protocol=protocol))
    with pytest.raises(InputError) as info:
        read_weights_file(path, "--clip.weights")
    assert not MARKER.exists()
    assert "weights_only=False" not in str(info.value) and "safe load" in str(info.value)


def weights_cases(tmp_path: Path, good: Path) -> dict[str, Path]:
    """Bad weights files: HTML, a code-running pickle, truncated copies of ``good``, garbage, TorchScript."""
    cases = {}
    cases["html"] = tmp_path / "page.pt"
    cases["html"].write_text("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")
    cases["pickle"] = tmp_path / "evil.pt"
    cases["pickle"].write_bytes(pickle.dumps({"weight": Boom()}, protocol=2))
    data = good.read_bytes()
    cases["truncated"] = tmp_path / f"truncated{good.suffix}"
    cases["truncated"].write_bytes(data[: len(data) // 3])
    cases["garbage"] = tmp_path / "garbage.bin"
    cases["garbage"].write_bytes(np.random.default_rng(0).bytes(4096))
    cases["empty"] = tmp_path / "empty.pt"
    cases["empty"].write_bytes(b"")
    script = torch.jit.script(torch.nn.Linear(2, 2))
    cases["torchscript"] = tmp_path / "ViT-B-16.pt"
    script.save(str(cases["torchscript"]))
    return cases


def test_openclip_bad_weights_files_through_the_real_builder(tmp_path):
    """open_clip's own loading path (tiny registered architecture) behind read_weights_file."""
    open_clip = pytest.importorskip("open_clip")
    import warnings

    from features_helpers import TINY_CLIP
    from ovs3d.features.encoders import ClipConfig
    from ovs3d.features.registry import build_image_text_encoder

    (tmp_path / "ovs3d-test-tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "ovs3d-test-tiny.json")
    good = tmp_path / "good.pt"
    torch.save(open_clip.create_model("ovs3d-test-tiny").state_dict(), good)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = weights_cases(tmp_path, good)
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.unrelated": torch.zeros(3)}, wrong)
    cases["wrong model"] = wrong
    MARKER.unlink(missing_ok=True)
    for kind, path in cases.items():
        with pytest.raises(InputError) as info:
            build_image_text_encoder(ClipConfig(model="ovs3d-test-tiny", weights=path), torch.device("cpu"))
        message = str(info.value)
        assert info.value.path == path and "clip.weights" in message, (kind, message)
        assert "weights_only=False" not in message, kind
        if kind == "torchscript":
            assert "TorchScript" in message and message.endswith("hub cache")
        if kind == "wrong model":
            detail = message.split("(", 1)[1].split(")")[0]
            assert detail.endswith("...") or len(detail) < 300  # summarised at a word boundary
    assert not MARKER.exists()


def test_dino_bad_weights_files_through_the_real_builder(tmp_path):
    pytest.importorskip("timm")
    import warnings

    from safetensors.torch import save_file

    from ovs3d.features.encoders import DinoConfig
    from ovs3d.features.registry import build_dense_extractor

    good = tmp_path / "good.safetensors"
    save_file({"pos_embed": torch.zeros(1, 5, 8)}, good)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = weights_cases(tmp_path, good)
    cases["wrong model"] = good
    for kind, path in cases.items():
        with pytest.raises(InputError) as info:
            build_dense_extractor(DinoConfig(model="vit_small_patch8_224.dino", weights=path), torch.device("cpu"))
        assert info.value.path == Path(path) and "dino." in str(info.value), (kind, str(info.value))
