"""The in-memory scene every stage consumes (``scene/load.py`` reads one from a folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ovs3d.scene.annotations import Annotations
from ovs3d.scene.cameras import Cameras

SceneKind = Literal["forward", "360"]


@dataclass
class Scene:
    """Posed RGB images, in ovs3d's camera convention (see ``scene/cameras.py``).

    Attributes:
        root: the scene folder.
        image_paths: the N image files, sorted by name (their order is the image index).
        images: [N, H, W, 3] float32 RGB in [0, 1] at the working resolution.
        cameras: the N cameras at the working resolution.
        bounds: [N, 2] near/far depth bounds per camera, in the scene's (rescaled) units.
        kind: ``forward`` (rendered in NDC) or ``360`` (unbounded, object-centric).
        train_views / test_views: image indices; test_views is empty unless a hold-out was asked for.
        annotations: ground-truth masks, or None when the scene has none.
        classes: the class prompts (from ``segmentations/classes.txt`` or given), or empty.
        object_masks: [N, H, W] float32 object masks in [0, 1] (``scene/masks.py``), or None.
        input_from_scene: [4, 4] similarity from the scene's normalised frame back to the frame of the
            pose file (``scene/normalize.py``): x_input = input_from_scene @ [x, 1]; exports use it.
    """

    root: Path
    image_paths: list[Path]
    images: np.ndarray
    cameras: Cameras
    bounds: np.ndarray
    kind: SceneKind
    train_views: list[int]
    test_views: list[int] = field(default_factory=list)
    annotations: Annotations | None = None
    classes: list[str] = field(default_factory=list)
    object_masks: np.ndarray | None = None
    input_from_scene: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def width(self) -> int:
        return self.cameras.width

    @property
    def height(self) -> int:
        return self.cameras.height

    @property
    def name(self) -> str:
        return self.root.name

    def images_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """[N, H, W, 3] float32 images on ``device``."""
        return torch.from_numpy(self.images).to(device)


def holdout_split(n_images: int, every: int) -> tuple[list[int], list[int]]:
    """(train, test) image indices: with ``every`` > 0, every ``every``-th image (0, every, ...) is held
    out (the LLFF habit, ``every`` = 8); with 0 all images train and none is held out (the paper)."""
    if every <= 0:
        return list(range(n_images)), []
    test = list(range(0, n_images, every))
    return [i for i in range(n_images) if i % every != 0], test
