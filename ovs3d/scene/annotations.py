"""Ground-truth annotations in the 3D-OVS layout (method spec sections 2.8-2.9).

``segmentations/classes.txt`` holds one prompt per line (UTF-8, a leading BOM allowed; lines end with
``\\n``, ``\\r\\n`` or ``\\r``; surrounding spaces are stripped; empty lines in the middle, repeated prompts and
invisible control characters are errors). Each annotated view has a folder ``segmentations/<image index>/``
(ASCII digits, e.g. ``04``) with one binary mask per class. Masks are converted to grayscale, resized with
NEAREST to the working size, and only the value 255 counts as foreground. A pixel may carry zero, one or
several labels.

How a prompt finds its mask (class names are data, never paths):

- The mask's file name is the prompt's entry in the optional manifest ``segmentations/masks.json``
  (a JSON object ``{"<prompt>": "<file name>"}``) or, without an entry, the prompt followed by ``.png``.
- That name is compared, as a string, with the entries of the view folder as the file system lists them
  (``os.listdir``); only a listed regular file is opened. The prompt is never joined into a path, so no
  prompt can reach a file outside the view folder. A listed entry that is a symbolic link, and a view
  folder that is one, must resolve inside ``segmentations/`` (wherever that folder itself lives).
- A prompt without a manifest entry must be usable as a plain file name: no ``/``, ``\\`` or NUL, not
  ``.`` or ``..`` and not starting with ``.``, and ``<prompt>.png`` at most 255 bytes in UTF-8. A prompt
  that breaks this rule is an error (naming ``classes.txt``) only when masks are read, i.e. when the
  scene has annotated views; the fix is a manifest entry, e.g. ``{"red/blue ball": "red-blue ball.png"}``.
- Manifest file names must be plain names (not empty, no ``/``, ``\\`` or NUL, not ``.`` or ``..``, at
  most 255 bytes), and every manifest key must be a prompt of ``classes.txt``.

An annotation folder not named by its image's index (a dataset quirk, e.g. 3D-OVS ``table``'s folder ``30``
annotating ``IMG_20230412_214716``) is given by a mapping folder name -> image file stem (``image_indices``);
the ground truth may also live in another folder than ``segmentations/`` (e.g. corrected labels) of the same
layout (``load_annotations(folder=...)``).

Class order: we keep the order of ``classes.txt``. The authors sort it case-sensitively; the order
changes only the colours and indices, never a metric.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ovs3d.errors import InputError, shown
from ovs3d.io.images import open_image

CLASSES = "classes.txt"
MANIFEST = "masks.json"
MASK_SUFFIX = ".png"
NAME_MAX_BYTES = 255
TEXT_MAX_BYTES = 1 << 20


@dataclass
class Annotations:
    """Per-view ground truth.

    Attributes:
        classes: the C prompts, in ``classes.txt`` order.
        views: the annotated image indices, ascending.
        labels: [n_views, H, W, C] uint8 in {0, 1}.
    """

    classes: list[str]
    views: list[int]
    labels: np.ndarray


def read_text(path: str | Path, what: str, max_bytes: int = TEXT_MAX_BYTES) -> str:
    """The text of a small user-written file, decoded as UTF-8 (a leading BOM dropped); a file that is
    missing, unreadable, too large or not UTF-8 raises InputError naming it."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputError(path, f"the {what} is {size} bytes, more than the {max_bytes} a {what} may have",
                             f"check that this is the right file; a {what} is a short text file")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read the {what} ({exc.strerror or exc})",
                         "make the file readable") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"the {what} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})",
                         "save it as UTF-8") from exc


def text_lines(text: str) -> list[str]:
    """Lines split at ``\\r\\n``, ``\\r`` or ``\\n`` only (not at the other characters str.splitlines
    splits at, which may be part of a prompt's text)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def control_character(text: str) -> str | None:
    """The first invisible control character of ``text`` (tab allowed), as 'U+XXXX', else None."""
    for char in text:
        if char != "\t" and unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X}"
    return None


def read_classes(path: str | Path) -> list[str]:
    """Class prompts of a ``classes.txt``: stripped lines; empty or duplicate lines are errors."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the class list does not exist", "write one class prompt per line in this file")
    lines = [line.strip() for line in text_lines(read_text(path, "class list"))]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise InputError(path, "the class list is empty", "write one class prompt per line")
    for number, line in enumerate(lines, start=1):
        if not line:
            raise InputError(path, f"line {number} is empty", "remove the empty line")
        bad = control_character(line)
        if bad is not None:
            raise InputError(path, f"line {number} ({shown(line)}) contains the invisible control character {bad}",
                             "remove it (write one plain-text prompt per line)")
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        key = unicodedata.normalize("NFC", line)
        if key in seen:
            same = "" if lines[seen[key] - 1] == line else " (written with other Unicode code points)"
            raise InputError(path, f"line {number} repeats the class '{line}' of line {seen[key]}{same}",
                             "keep each class once")
        seen[key] = number
    return lines


def path_character(name: str) -> str | None:
    """The first character of ``name`` that makes it a path rather than a name ('/', '\\', NUL), else None."""
    for char, label in (("/", "'/'"), ("\\", "'\\'"), ("\x00", "a NUL character")):
        if char in name:
            return label
    return None


def plain_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a file name inside a folder (None when it can)."""
    if not name:
        return "is empty"
    char = path_character(name)
    if char is not None:
        return f"contains {char}"
    if name in (".", ".."):
        return f"is '{name}'"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size > NAME_MAX_BYTES:
        return f"is {size} bytes long in UTF-8, more than a file name may have ({NAME_MAX_BYTES})"
    return None


def default_mask_name(prompt: str) -> tuple[str | None, str | None]:
    """(``<prompt>.png``, None), or (None, why the prompt cannot name its mask file)."""
    char = path_character(prompt)
    if char is not None:
        return None, f"contains {char}"
    if prompt in (".", ".."):
        return None, f"is '{prompt}'"
    if prompt.startswith("."):
        return None, "starts with '.' (a hidden or relative-path file name)"
    size = len((prompt + MASK_SUFFIX).encode("utf-8", "surrogatepass"))
    if size > NAME_MAX_BYTES:
        return None, (f"gives a {size}-byte file name '<prompt>{MASK_SUFFIX}', more than a file name may have "
                      f"({NAME_MAX_BYTES} bytes)")
    return prompt + MASK_SUFFIX, None


def read_manifest(seg_dir: Path, classes: list[str]) -> dict[str, str]:
    """The prompt -> mask file name entries of ``segmentations/masks.json`` ({} when absent)."""
    path = seg_dir / MANIFEST
    if not path.exists():
        return {}
    fix = 'write a JSON object {"<prompt>": "<mask file name in each view folder>", ...}'

    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise InputError(path, f"the prompt {shown(key)} has two entries", "keep one entry per prompt")
            out[key] = value
        return out

    try:
        manifest = json.loads(read_text(path, "mask manifest"), object_pairs_hook=pairs)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(path, f"the mask manifest is not valid JSON ({exc})", fix) from None
    if not isinstance(manifest, dict):
        raise InputError(path, f"the mask manifest is a JSON {type(manifest).__name__}, not an object", fix)
    known = set(classes)
    for prompt, name in manifest.items():
        if prompt not in known:
            raise InputError(path, f"the entry {shown(prompt)} is not a class of {CLASSES}",
                             f"spell the prompt exactly as in {CLASSES}, or remove the entry")
        if not isinstance(name, str):
            raise InputError(path, f"the file name of {shown(prompt)} is a JSON {type(name).__name__}, not a string",
                             fix)
        problem = plain_name_problem(name)
        if problem is not None:
            raise InputError(path, f"the file name {shown(name)} of {shown(prompt)} {problem}",
                             "give a plain file name of the view folders (no folders, no '..')")
    return manifest


def mask_names(seg_dir: Path, classes: list[str]) -> list[str]:
    """The mask file name of each class (see the module docstring), or InputError naming classes.txt."""
    manifest = read_manifest(seg_dir, classes)
    names = []
    for number, prompt in enumerate(classes, start=1):
        if prompt in manifest:
            names.append(manifest[prompt])
            continue
        name, problem = default_mask_name(prompt)
        if name is None:
            raise InputError(seg_dir / CLASSES, f"the class {shown(prompt)} on line {number} {problem}, so it cannot "
                             f"name its mask file (masks are found by the exact file name '<prompt>{MASK_SUFFIX}' "
                             "in each view folder)",
                             f"map the prompt to a plain file name in {seg_dir / MANIFEST}, e.g. "
                             '{"red/blue ball": "red-blue ball.png"}, and name its masks so')
        names.append(name)
    return names


def inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` resolves (symbolic links followed) to ``folder`` or below it."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def image_indices(seg_dir: Path, view_images: Mapping[str, str], image_paths: Sequence[Path]) -> dict[str, int]:
    """Annotation folder name -> image index for the folders of ``view_images`` (folder -> image file stem), the
    index being that image's position in ``image_paths``; InputError naming the folder when no image has the stem."""
    stems = {Path(p).stem: i for i, p in enumerate(image_paths)}
    out = {}
    for folder, stem in view_images.items():
        if stem not in stems:
            raise InputError(seg_dir / folder, f"this annotation folder is said to annotate the image '{stem}', which is "
                             "not among the scene's images", "check the folder -> image mapping (image file name "
                             "without its extension)")
        out[folder] = stems[stem]
    return out


def annotated_views(seg_dir: Path, n_images: int, folder_index: Mapping[str, int] | None = None) -> list[tuple[int, Path]]:
    """(image index, folder) for each annotated view, sorted by index; names must be integers < n_images
    unless ``folder_index`` maps the name to its index; one folder per index. Hidden folders (name starting
    with '.') are ignored."""
    folder_index = dict(folder_index or {})
    for name in folder_index:
        if not (seg_dir / name).is_dir():
            raise InputError(seg_dir / name, "the annotation folder mapped to an image does not exist",
                             "check the folder -> image mapping against the folders of this directory")
    views: dict[int, Path] = {}
    for folder in sorted(p for p in seg_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        mapped = folder.name in folder_index
        if not mapped and not (folder.name.isascii() and folder.name.isdigit()):
            raise InputError(folder, "an annotation folder name is not an image index",
                             "name each annotated view's folder by its image index in sorted order, e.g. '04'")
        if not inside(folder, seg_dir):
            raise InputError(folder, "the annotation folder is a link to a place outside segmentations/",
                             "copy the view's masks into a real folder here")
        index = folder_index[folder.name] if mapped else int(folder.name)
        if not 0 <= index < n_images:
            raise InputError(folder, f"image index {index} is out of range (the scene has {n_images} images)",
                             "name the folder by the index of its image in sorted order")
        if index in views:
            raise InputError(folder, f"image {index} already has the annotation folder '{views[index].name}'",
                             "keep one folder per annotated view and merge or delete the other")
        views[index] = folder
    return sorted(views.items())


def find_mask(folder: Path, entries: set[str], name: str, prompt: str, seg_dir: Path) -> Path:
    """The mask file ``name`` among the listed ``entries`` of ``folder`` (exact string match), checked to
    be a regular file inside ``segmentations/``; else InputError naming the expected file."""
    expected = folder / name
    if name not in entries:
        near = [e for e in entries if unicodedata.normalize("NFC", e).casefold()
                == unicodedata.normalize("NFC", name).casefold()]
        hint = f"; {shown(near[0])} differs only in letter case or Unicode form" if near else ""
        raise InputError(expected, f"the mask of class {shown(prompt)} is missing{hint}",
                         "add a binary PNG (255 = class) named exactly as the prompt plus '.png', or map the "
                         "prompt to its file name in segmentations/masks.json")
    if not inside(expected, seg_dir):
        raise InputError(expected, "the mask is a link to a file outside segmentations/",
                         "copy the mask file into the view folder")
    if not expected.is_file():
        raise InputError(expected, f"the mask of class {shown(prompt)} is not a file", "put a PNG mask here")
    return expected


def read_mask(path: Path, size: tuple[int, int], source_size: tuple[int, int]) -> np.ndarray:
    """Binary mask [H, W] uint8: grayscale, NEAREST-resized to ``size`` = (W, H), 1 where the value is 255.

    ``source_size`` is the scene's stored image size; a mask of another size is an error."""
    im = open_image(path, fix="replace it with a binary PNG mask (255 = class) of the image's size")
    if im.size != tuple(source_size):
        raise InputError(path, f"the mask is {im.size[0]}x{im.size[1]} but the images are "
                               f"{source_size[0]}x{source_size[1]}", "save the mask at the image's size")
    try:
        gray = im.convert("L")
    except (ValueError, OSError) as exc:
        raise InputError(path, f"cannot convert the mask (mode {im.mode}) to grayscale ({exc})",
                         "save the mask as an 8-bit grayscale or RGB PNG") from exc
    if gray.size != tuple(size):
        gray = gray.resize(tuple(size), Image.Resampling.NEAREST)
    return (np.asarray(gray) == 255).astype(np.uint8)


def locate_masks(seg_dir: Path, n_images: int, folder_index: Mapping[str, int] | None = None
                 ) -> tuple[list[str], list[int], list[list[Path]]] | None:
    """(classes, view indices, mask file [view][class]) of an annotation folder, every file found and checked
    but none decoded (fail fast); None when it has no ``classes.txt``."""
    if not (seg_dir / CLASSES).is_file():
        return None
    classes = read_classes(seg_dir / CLASSES)
    views = annotated_views(seg_dir, n_images, folder_index)
    if not views:
        read_manifest(seg_dir, classes)
        return classes, [], []
    names = mask_names(seg_dir, classes)
    masks = []
    for _, folder in views:
        try:
            entries = set(os.listdir(folder))
        except OSError as exc:
            raise InputError(folder, f"cannot list the annotation folder ({exc.strerror or exc})",
                             "make the folder readable") from exc
        masks.append([find_mask(folder, entries, name, prompt, seg_dir) for name, prompt in zip(names, classes)])
    return classes, [index for index, _ in views], masks


def load_annotations(scene_root: str | Path, n_images: int, size: tuple[int, int], source_size: tuple[int, int],
                     folder: str | Path = "segmentations", folder_index: Mapping[str, int] | None = None
                     ) -> Annotations | None:
    """Read the ground truth ``<scene_root>/<folder>``; None when it has no ``classes.txt``.

    Args:
        n_images: number of images (bounds the view indices).
        size: working (W, H); source_size: the stored images' (W, H).
        folder: the annotation folder, relative to the scene (or absolute).
        folder_index: annotation folders not named by their image index -> index (``image_indices``).
    """
    located = locate_masks(Path(scene_root) / folder, n_images, folder_index)
    if located is None:
        return None
    classes, views, masks = located
    width, height = size
    labels = np.zeros((len(views), height, width, len(classes)), dtype=np.uint8)
    for v, paths in enumerate(masks):
        for c, path in enumerate(paths):
            labels[v, :, :, c] = read_mask(path, size, source_size)
    return Annotations(classes=classes, views=views, labels=labels)
