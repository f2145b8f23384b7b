"""Class names are data, never paths: how a prompt finds its mask (ovs3d/scene/annotations.py docstring)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovs3d.errors import InputError
from ovs3d.scene import annotations
from ovs3d.scene.annotations import load_annotations, read_classes

SIZE = (8, 4)


def write_mask(path: Path, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((SIZE[1], SIZE[0]), value, np.uint8)).save(path)


def scene(root: Path, classes: list[str], masks: dict[str, str] | None = None, manifest: object = None,
          views: tuple[int, ...] = (0,)) -> Path:
    """A segmentations/ folder: ``classes`` in classes.txt, one mask per (view, file name in ``masks``,
    default '<prompt>.png'), and masks.json when ``manifest`` is given."""
    seg = root / "segmentations"
    seg.mkdir(parents=True)
    (seg / "classes.txt").write_text("\n".join(classes) + "\n", encoding="utf-8")
    names = masks if masks is not None else {c: f"{c}.png" for c in classes}
    for view in views:
        (seg / f"{view:02d}").mkdir()
        for name in names.values():
            write_mask(seg / f"{view:02d}" / name)
    if manifest is not None:
        (seg / "masks.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    return root


def load(root: Path):
    return load_annotations(root, n_images=4, size=SIZE, source_size=SIZE)


def refused(root: Path, offending: Path, *words: str) -> InputError:
    with pytest.raises(InputError) as info:
        load(root)
    assert info.value.path == offending, str(info.value)
    for word in words:
        assert word in str(info.value), str(info.value)
    return info.value


@pytest.fixture
def opened(monkeypatch) -> list[Path]:
    """Every path the annotation loader hands to the image decoder."""
    seen: list[Path] = []
    real = annotations.open_image

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(annotations, "open_image", spy)
    return seen


@pytest.mark.parametrize("prompt, problem", [
    ("../../images/00", "contains '/'"),
    ("/etc/passwd", "contains '/'"),
    ("red/blue ball", "contains '/'"),
    ("red\\blue ball", "contains '\\'"),
    ("..", "is '..'"),
    (".", "is '.'"),
    (".hidden", "starts with '.'"),
    ("ball " * 60, "more than a file name may have"),
])
def test_path_like_prompt_is_refused_naming_classes_txt(tmp_path, opened, prompt, problem):
    root = scene(tmp_path, ["wall", prompt], masks={"wall": "wall.png"})
    outside = tmp_path / "images" / "00.png"
    write_mask(outside)  # a PNG the prompt points at, outside segmentations/
    err = refused(root, root / "segmentations" / "classes.txt", problem, "masks.json", "line 2")
    assert "Fix:" in str(err)
    assert opened == []  # nothing decoded, least of all the file the prompt points at


@pytest.mark.parametrize("prompt", ["red/blue ball", "../../images/00", "ball " * 60, ".."])
def test_manifest_maps_any_prompt_to_a_plain_file(tmp_path, prompt):
    prompt = prompt.strip()  # classes.txt lines are stripped
    root = scene(tmp_path, ["wall", prompt], masks={"wall": "wall.png", prompt: "odd.png"},
                 manifest={prompt: "odd.png"})
    ann = load(root)
    assert ann.classes == ["wall", prompt] and ann.labels.shape == (1, 4, 8, 2)
    assert ann.labels.all()


def test_path_like_prompts_are_fine_without_annotated_views(tmp_path):
    root = scene(tmp_path, ["red/blue ball", "wall"], masks={}, views=())
    ann = load(root)
    assert ann.classes == ["red/blue ball", "wall"] and ann.views == []


def test_exact_name_match_only(tmp_path, opened):
    root = scene(tmp_path, ["Ball"], masks={"Ball": "ball.png"})
    err = refused(root, root / "segmentations" / "00" / "Ball.png", "missing", "'ball.png'", "letter case")
    assert "masks.json" in err.fix and opened == []


def test_masks_are_read_from_listed_files_only(tmp_path, opened):
    root = scene(tmp_path, ["wall", "floor"])
    ann = load(root)
    assert ann.labels.shape == (1, 4, 8, 2)
    assert sorted(p.name for p in opened) == ["floor.png", "wall.png"]
    assert all(p.parent == root / "segmentations" / "00" for p in opened)


@pytest.mark.parametrize("manifest, problem", [
    ("{not json", "not valid JSON"),
    ('["wall.png"]', "not an object"),
    ({"wall": 3}, "not a string"),
    ({"wall": "../00/wall.png"}, "contains '/'"),
    ({"wall": ".."}, "is '..'"),
    ({"wall": ""}, "is empty"),
    ({"wall": "a\\b.png"}, "contains '\\'"),
    ({"floor": "floor.png"}, "not a class of classes.txt"),
    ('{"wall": "a.png", "wall": "b.png"}', "two entries"),
])
def test_bad_manifest(tmp_path, manifest, problem):
    root = scene(tmp_path, ["wall"], manifest=manifest)
    refused(root, root / "segmentations" / "masks.json", problem)


def test_manifest_not_utf8(tmp_path):
    root = scene(tmp_path, ["wall"])
    (root / "segmentations" / "masks.json").write_bytes(b'{"wall": "\xff.png"}')
    err = refused(root, root / "segmentations" / "masks.json", "not UTF-8")
    assert err.fix == "save it as UTF-8"


def test_symlinked_mask_outside_segmentations_is_refused(tmp_path, opened):
    root = scene(tmp_path, ["wall"], masks={})
    secret = tmp_path / "elsewhere" / "secret.png"
    write_mask(secret)
    (root / "segmentations" / "00" / "wall.png").symlink_to(secret)
    refused(root, root / "segmentations" / "00" / "wall.png", "outside segmentations/")
    assert opened == []


def test_symlinked_view_folder_outside_segmentations_is_refused(tmp_path):
    root = scene(tmp_path, ["wall"], views=())
    write_mask(tmp_path / "elsewhere" / "wall.png")
    (root / "segmentations" / "01").symlink_to(tmp_path / "elsewhere")
    refused(root, root / "segmentations" / "01", "outside segmentations/")


def test_symlinked_mask_inside_segmentations_is_followed(tmp_path):
    root = scene(tmp_path, ["wall"], views=(0,))
    (root / "segmentations" / "01").mkdir()
    (root / "segmentations" / "01" / "wall.png").symlink_to(root / "segmentations" / "00" / "wall.png")
    assert load(root).views == [0, 1]


def test_symlinked_segmentations_folder_is_fine(tmp_path):
    real = scene(tmp_path / "store", ["wall"])
    (tmp_path / "scene").mkdir()
    (tmp_path / "scene" / "segmentations").symlink_to(real / "segmentations")
    assert load(tmp_path / "scene").views == [0]


def test_view_folder_names_are_ascii_digits(tmp_path):
    root = scene(tmp_path, ["wall"], views=())
    (root / "segmentations" / "0_1").mkdir()
    refused(root, root / "segmentations" / "0_1", "not an image index")


# ---- classes.txt ------------------------------------------------------------------------------------


def classes_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "classes.txt"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("data, problem", [
    (b"red ball\n\xff\xfeblue\n", "not UTF-8"),
    (b"", "empty"),
    (b"\n\n  \n", "empty"),
    (b"red ball\n   \nblue box\n", "line 2 is empty"),
    (b"red ball\nblue box\n red ball \n", "line 3 repeats the class 'red ball' of line 1"),
    ("caf\u00e9\ncafe\u0301\n".encode(), "other Unicode code points"),
    (b"red\x00ball\n", "U+0000"),
    (b"red\x1bball\n", "U+001B"),
])
def test_bad_class_list(tmp_path, data, problem):
    path = classes_file(tmp_path, data)
    with pytest.raises(InputError) as info:
        read_classes(path)
    assert info.value.path == path and problem in str(info.value), str(info.value)
    if problem == "not UTF-8":
        assert info.value.fix == "save it as UTF-8"


def test_class_lines_split_at_newlines_only(tmp_path):
    """str.splitlines would also split at U+2028 (a line separator that is text here), and U+0085 is a
    control character, refused."""
    path = classes_file(tmp_path, "\ufeffa\u2028b\r\nc\u00a0d\rtab\there\n".encode())
    assert read_classes(path) == ["a\u2028b", "c\u00a0d", "tab\there"]
    path = classes_file(tmp_path, "a\u0085b\n".encode())
    with pytest.raises(InputError, match="U\\+0085"):
        read_classes(path)


def test_class_list_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations.read_text, "__defaults__", (16,))
    path = classes_file(tmp_path, b"x" * 17 + b"\n")
    with pytest.raises(InputError, match="18 bytes, more than the 16"):
        read_classes(path)


def test_unreadable_class_list(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = classes_file(tmp_path, b"wall\n")
    path.chmod(0)
    with pytest.raises(InputError, match="cannot read"):
        read_classes(path)
