"""Annotations in the 3D-OVS layout (method spec section 2.9), on hand-made masks with known labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovs3d.errors import InputError
from ovs3d.scene.annotations import image_indices, load_annotations, read_classes


def write_mask(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8)).save(path)


def make_segmentations(root: Path) -> None:
    """Classes 'b cat' and 'a dog' (file order, not sorted) on views 10 and 2, 8x4 masks."""
    seg = root / "segmentations"
    seg.mkdir(parents=True)
    (seg / "classes.txt").write_text("\ufeffb cat\r\na dog\r\n\r\n")  # BOM, CRLF and a trailing empty line
    cat = np.zeros((4, 8))
    cat[:, :4] = 255
    cat[0, 0] = 254  # anti-aliased value: not foreground
    dog = np.zeros((4, 8))
    dog[:, 2:6] = 255  # overlaps the cat on columns 2-3
    write_mask(seg / "10" / "b cat.png", cat)
    write_mask(seg / "10" / "a dog.png", dog)
    write_mask(seg / "2" / "b cat.png", np.zeros((4, 8)))
    rgb = np.zeros((4, 8, 3))
    rgb[..., 0] = 255
    rgb[:, 7] = 255  # white column: grey level 255
    write_mask(seg / "2" / "a dog.png", rgb)
    (seg / ".cache").mkdir()  # hidden folders are ignored


def test_classes_keep_file_order(tmp_path):
    make_segmentations(tmp_path)
    assert read_classes(tmp_path / "segmentations" / "classes.txt") == ["b cat", "a dog"]


def test_labels_known_answer(tmp_path):
    make_segmentations(tmp_path)
    ann = load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4))
    assert ann.classes == ["b cat", "a dog"]
    assert ann.views == [2, 10]  # integer order, not string order
    assert ann.labels.shape == (2, 4, 8, 2) and ann.labels.dtype == np.uint8
    cat, dog = ann.labels[1, ..., 0], ann.labels[1, ..., 1]
    expected_cat = np.zeros((4, 8), np.uint8)
    expected_cat[:, :4] = 1
    expected_cat[0, 0] = 0
    np.testing.assert_array_equal(cat, expected_cat)
    assert dog[:, 2:6].all() and dog.sum() == 16
    assert (ann.labels[1].sum(-1) == 2).sum() == 8  # two labels where they overlap
    assert (ann.labels[1].sum(-1) == 0).sum() == 1 + 8  # (0, 0) at 254, and columns 6-7 (4 rows) of nobody
    # view 2: pure red is grey level 76 -> background; the white column is foreground
    np.testing.assert_array_equal(ann.labels[0, ..., 1].sum(0), [0, 0, 0, 0, 0, 0, 0, 4])


def test_nearest_resize(tmp_path):
    make_segmentations(tmp_path)
    ann = load_annotations(tmp_path, n_images=12, size=(4, 2), source_size=(8, 4))
    assert ann.labels.shape == (2, 2, 4, 2)
    # NEAREST picks source columns 1, 3, 5, 7 (centres of 2-pixel blocks) -> no blending at edges
    np.testing.assert_array_equal(ann.labels[1, 0, :, 0], [1, 1, 0, 0])
    np.testing.assert_array_equal(ann.labels[1, 0, :, 1], [0, 1, 1, 0])
    assert set(np.unique(ann.labels)) <= {0, 1}


def test_no_class_list_means_no_annotations(tmp_path):
    assert load_annotations(tmp_path, n_images=3, size=(8, 4), source_size=(8, 4)) is None


def test_a_folder_not_named_by_its_index_is_mapped_to_its_image(tmp_path):
    make_segmentations(tmp_path)
    seg = tmp_path / "segmentations"
    (seg / "10").rename(seg / "30")                                 # as 3D-OVS table's folder 30
    images = [Path(f"{i:02d}.jpg") for i in range(11)] + [Path("IMG_20230412_214716.jpg")]
    index = image_indices(seg, {"30": "IMG_20230412_214716"}, images)
    assert index == {"30": 11}
    ann = load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4), folder_index=index)
    assert ann.views == [2, 11] and ann.labels[1, ..., 0].sum() == 15
    with pytest.raises(InputError, match="out of range"):          # without the mapping: image 30 of 12
        load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4))
    with pytest.raises(InputError, match="not among the scene's images"):
        image_indices(seg, {"30": "IMG_missing"}, images)
    with pytest.raises(InputError, match="does not exist"):
        load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4), folder_index={"31": 3, "30": 11})


def test_ground_truth_from_another_folder(tmp_path):
    make_segmentations(tmp_path)
    (tmp_path / "segmentations").rename(tmp_path / "segmentations_corrected")
    assert load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4)) is None
    ann = load_annotations(tmp_path, n_images=12, size=(8, 4), source_size=(8, 4), folder="segmentations_corrected")
    assert ann.views == [2, 10] and ann.classes == ["b cat", "a dog"]
