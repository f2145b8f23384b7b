"""What stage 2 reads per iteration (method spec section 6): the teacher's features, the class text
and the seeded ray draws of both branches.

* CLIP branch: ``batch_size`` pixels of the CLIP feature maps (all training views, drawn without
  replacement from a seeded permutation of every pixel, reshuffled each epoch). Each pixel's ray goes
  through its centre at the feature resolution; its normalised CLIP features f_hat [3, 512] are read
  from the float16 maps, its min-max relevancies R [3, C] are computed on the fly from the per-image
  (scale, class) minima and maxima, and its colour is the image area-averaged to that resolution.
* DINO branch: ``patch_num`` crops of ``patch_size`` pixels at the DINO maps' resolution, i.e. windows
  of (patch_size / 8)^2 DINO tokens; each token's ray goes through the exact centre of its 8x8 pixel
  block (continuous coordinates 8k + 4), not an average of 64 rays.

Any teacher can fill ``SegmentationData``: the extracted feature caches (``prepare_data``) or any
object with the same ``sample`` / ``dense`` / ``block`` methods (a benchmark's degraded teacher).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf

from ovs3d.errors import InputError
from ovs3d.features.cache import FeatureMaps
from ovs3d.features.relevancy import apply_ranges, cosine_maps, minmax_ranges
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.scene import Scene


@dataclass
class SegmentationData:
    """Everything stage 2 reads per iteration.

    Attributes:
        clip: the CLIP hierarchy cache (``features.cache.FeatureMaps``: ``sample(image, u, v)`` ->
            [n, 3, 512] normalised, ``dense(image)`` -> [3, 512, h', w']), indexed by image index.
        dino: the DINO map cache (maps[image] = [E, hd, wd], stride 8), or None (DINO branch off).
        views: the training image indices (pixels and patches are drawn from these only).
        rgb: [len(views), h, w, 3] float32 images at the CLIP feature resolution (w, h).
        text: [C, 512] L2-normalised text embeddings of the class prompts.
        clip_cameras: all images' cameras at (w, h); dino_cameras: at the DINO input size (8 wd, 8 hd).
        rel_range: [len(views), 3, C, 2] per-image (min, max) of cos(f_hat_s, t_hat_c) over the stored map.
        dino_stride: pixels per DINO token (8 for ViT-B/8 and the built-in extractor).
    """

    clip: object
    dino: object | None
    views: list[int]
    rgb: np.ndarray
    text: torch.Tensor
    clip_cameras: Cameras
    dino_cameras: Cameras | None
    rel_range: torch.Tensor | None = None
    dino_stride: int = 8

    def __post_init__(self) -> None:
        if self.rel_range is None:
            self.rel_range = torch.stack([minmax_ranges(cosine_maps(self.clip.dense(i), self.text))
                                          for i in self.views])

    @property
    def clip_hw(self) -> tuple[int, int]:
        return self.clip_cameras.height, self.clip_cameras.width


@functools.lru_cache(maxsize=2)
def epoch_permutation(total: int, seed: int, epoch: int) -> torch.Tensor:
    """The seeded permutation [total] of every pixel for one epoch. Cached, so it is drawn once per epoch
    rather than once per iteration (about 0.4 s for the 1.4 M pixels of 29 views at 252x189). Read only."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000003 + epoch))


def draw_clip_pixels(n_views: int, h: int, w: int, batch: int, iteration: int, seed: int) -> torch.Tensor:
    """Flat pixel indices [batch] into [V, h, w] for ``iteration``: consecutive slices of per-epoch seeded
    permutations of all V h w pixels (without replacement within an epoch; a pure function of the iteration)."""
    total = n_views * h * w
    start = iteration * batch
    pieces, taken = [], 0
    while taken < batch:
        epoch, offset = divmod(start + taken, total)
        piece = epoch_permutation(total, seed, epoch)[offset:offset + batch - taken]
        pieces.append(piece)
        taken += piece.numel()
    return torch.cat(pieces)


def gather_clip_batch(data: SegmentationData, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """For pixels ``flat`` (indices into [V, h, w]): features f_hat [B, 3, 512] (bilinear from the cache at
    the pixel centres), min-max relevancies R [B, 3, C], colours [B, 3], and (image, u, v) of their rays."""
    h, w = data.clip_hw
    pos, rem = torch.div(flat, h * w, rounding_mode="floor"), flat % (h * w)
    y, x = torch.div(rem, w, rounding_mode="floor"), rem % w
    u, v = x.double() + 0.5, y.double() + 0.5
    feats = None
    for k in torch.unique(pos).tolist():
        sel = (pos == k).nonzero().squeeze(1)
        part = data.clip.sample(data.views[k], (u[sel] / w).numpy(), (v[sel] / h).numpy())  # [k, 3, D]
        if feats is None:
            feats = part.new_empty((flat.shape[0],) + part.shape[1:])
        feats[sel] = part
    rng = data.rel_range[pos]  # [B, 3, C, 2]
    rel = apply_ranges(torch.einsum("bsd,cd->bsc", feats, data.text), rng)
    rgb = torch.from_numpy(data.rgb[pos.numpy(), y.numpy(), x.numpy()])
    image = torch.tensor(data.views)[pos]
    return {"clip": feats, "relevancy": rel.clamp(0, 1), "rgb": rgb, "view": image, "u": u.float(), "v": v.float()}


def draw_dino_patches(data: SegmentationData, n: int, size: int, generator: torch.Generator
                      ) -> dict[str, torch.Tensor]:
    """``n`` crops of t x t DINO tokens (t = size / stride, capped by the map) from random training views:
    tokens [n, t^2, E] and each token's ray through the exact centre (stride k + stride / 2) of its pixel block."""
    stride = data.dino_stride
    hd, wd = data.dino.shape[-2:]
    t = max(1, min(size // stride, hd, wd))
    picks = torch.randint(0, len(data.views), (n,), generator=generator)
    tokens, images, us, vs = [], [], [], []
    iy, ix = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    for k in picks.tolist():
        ty = int(torch.randint(0, hd - t + 1, (1,), generator=generator))
        tx = int(torch.randint(0, wd - t + 1, (1,), generator=generator))
        tokens.append(data.dino.block(data.views[k], ty, tx, t).reshape(t * t, -1))
        images.append(torch.full((t * t,), data.views[k]))
        us.append(((tx + ix) * stride + stride / 2).flatten().float())
        vs.append(((ty + iy) * stride + stride / 2).flatten().float())
    return {"dino": torch.stack(tokens), "view": torch.cat(images), "u": torch.cat(us), "v": torch.cat(vs)}


def prepare_data(scene: Scene, clip_folder: str | Path, dino_folder: str | Path | None, text: torch.Tensor
                 ) -> SegmentationData:
    """Training data of ``scene`` from its feature caches: the CLIP rays live at the cache's feature
    resolution (its ``key.resolution``), the DINO rays at the DINO input size."""
    clip = FeatureMaps(clip_folder)
    if len(clip) != scene.n_images:
        raise InputError(clip_folder, f"the feature cache holds {len(clip)} images, the scene {scene.n_images}",
                         "re-run `ovs3d extract` on this scene")
    w, h = clip.meta["key"]["resolution"]
    images = torch.from_numpy(scene.images[scene.train_views]).permute(0, 3, 1, 2)
    rgb = nnf.interpolate(images, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    dino, dino_cams, stride = None, None, 8
    if dino_folder is not None:
        dino = FeatureMaps(dino_folder)
        w8, h8 = dino.meta["key"]["input_size"]
        dino_cams, stride = scene.cameras.resized(w8, h8), int(dino.meta.get("stride", 8))
    return SegmentationData(clip=clip, dino=dino, views=list(scene.train_views),
                            rgb=rgb.permute(0, 2, 3, 1).contiguous().numpy(), text=text,
                            clip_cameras=scene.cameras.resized(w, h), dino_cameras=dino_cams,
                            dino_stride=stride)
