"""Bad scene folders: each raises InputError naming the offending file and a fix, before long work."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovs3d.cli.main import entrypoint
from ovs3d.errors import InputError
from ovs3d.scene.load import load_scene
from ovs3d.scene.synthetic import make_synthetic_scene


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """4 views of 32x24, masks on views 0 and 3."""
    return make_synthetic_scene(tmp_path_factory.mktemp("tiny") / "scene", n_views=4, width=32, height=24,
                                n_annotated=2, supersample=1)


@pytest.fixture
def scene(tiny, tmp_path) -> Path:
    """A private copy of the tiny scene to break."""
    return Path(shutil.copytree(tiny, tmp_path / "scene"))


def assert_names(offending: Path, root: Path) -> InputError:
    """load_scene(root) raises InputError whose path and message name ``offending`` and give a fix."""
    with pytest.raises(InputError) as info:
        load_scene(root)
    assert info.value.path == offending
    assert str(offending) in str(info.value) and "Fix:" in str(info.value)
    return info.value


def test_the_tiny_scene_is_valid(scene):
    assert load_scene(scene).annotations.views == [0, 3]


def test_missing_images_folder(scene):
    shutil.rmtree(scene / "images")
    assert_names(scene / "images", scene)


def test_no_images(scene):
    for p in (scene / "images").iterdir():
        p.unlink()
    (scene / "images" / "notes.txt").write_text("not an image")
    assert_names(scene / "images", scene)


def test_pose_rows_differ_from_image_count(scene):
    (scene / "images" / "03.png").unlink()
    err = assert_names(scene / "poses_bounds.npy", scene)
    assert "4 pose rows for 3 images" in str(err)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_poses(scene, bad):
    data = np.load(scene / "poses_bounds.npy")
    data[2, 7] = bad
    np.save(scene / "poses_bounds.npy", data)
    err = assert_names(scene / "poses_bounds.npy", scene)
    assert "rows [2]" in str(err)


def test_corrupt_image(scene):
    (scene / "images" / "01.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    assert_names(scene / "images" / "01.png", scene)


def test_truncated_image(scene):
    """A valid header with cut-off pixel data is caught when the pixels are decoded."""
    data = (scene / "images" / "02.png").read_bytes()
    (scene / "images" / "02.png").write_bytes(data[: len(data) // 2])
    assert_names(scene / "images" / "02.png", scene)


def test_mixed_image_sizes(scene):
    Image.new("RGB", (40, 30)).save(scene / "images" / "02.png")
    err = assert_names(scene / "images" / "02.png", scene)
    assert "40x30" in str(err)


@pytest.mark.parametrize("text, problem", [("red ball\n\nblue box\n", "line 2 is empty"),
                                           ("red ball\nblue box\nred ball\n", "line 3 repeats")])
def test_bad_class_list(scene, text, problem):
    (scene / "segmentations" / "classes.txt").write_text(text)
    err = assert_names(scene / "segmentations" / "classes.txt", scene)
    assert problem in str(err)


def test_missing_class_mask(scene):
    (scene / "segmentations" / "03" / "blue box.png").unlink()
    assert_names(scene / "segmentations" / "03" / "blue box.png", scene)


def test_mask_of_the_wrong_size(scene):
    Image.new("L", (16, 12), 255).save(scene / "segmentations" / "00" / "yellow cone.png")
    assert_names(scene / "segmentations" / "00" / "yellow cone.png", scene)


def test_non_integer_annotation_folder(scene):
    (scene / "segmentations" / "03").rename(scene / "segmentations" / "view3")
    assert_names(scene / "segmentations" / "view3", scene)


def test_out_of_range_annotation_folder(scene):
    (scene / "segmentations" / "03").rename(scene / "segmentations" / "07")
    assert_names(scene / "segmentations" / "07", scene)


def test_two_folders_for_one_view(scene):
    shutil.copytree(scene / "segmentations" / "03", scene / "segmentations" / "3")
    err = assert_names(scene / "segmentations" / "3", scene)
    assert "03" in str(err)


def test_make_scene_refuses_a_non_empty_folder(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SystemExit) as info:
        entrypoint(["make-scene", "--out", str(out), "--n-views", "2", "--width", "16", "--height", "16"])
    assert info.value.code == 2
    assert str(out) in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # nothing rendered beside it either


def test_make_scene_rejects_a_degenerate_size(tmp_path):
    with pytest.raises(InputError, match="--n-views >= 2"):
        make_synthetic_scene(tmp_path / "s", n_views=1)
    assert list(tmp_path.iterdir()) == []
