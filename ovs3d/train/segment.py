"""Stage 2: train the semantic field (feature head + selection volume) on a frozen stage-1 density.

Method spec section 6. Each iteration draws two batches:

* CLIP branch: ``batch_size`` pixels of the CLIP feature maps (all training views, drawn without
  replacement from a seeded permutation of every pixel, reshuffled each epoch). Each pixel's ray goes
  through its centre at the feature resolution; its normalised CLIP features f_hat [3, 512] are read
  from the float16 maps, its min-max relevancies R [3, C] are computed on the fly from the per-image
  (scale, class) minima and maxima, and its colour is the image area-averaged to that resolution.
* DINO branch: ``patch_num`` crops of ``patch_size`` pixels at the DINO maps' resolution, i.e. windows
  of (patch_size / 8)^2 DINO tokens; each token's ray goes through the exact centre of its 8x8 pixel
  block (continuous coordinates 8k + 4), not an average of 64 rays.

Losses (``train/losses.py``): L = [t >= joint_start] L_rgb + L_feat + w_pos L_pos + w_neg L_neg +
w_rel L_RDA. A weight of 0 skips its branch entirely (both DINO weights 0: no DINO render at all).
In improved mode the selection S is detached inside L_feat (``SegmentConfig.feature_selection_grad``),
so S is learned from L_RDA only.

Schedule (spec 6.6): Adam(0.9, 0.99); every group's lr decays as lr0 * ratio^(t / iterations); at
``joint_start_iter`` a fresh Adam is created at the initial lrs with the appearance unfrozen (its own
lrs) and the RGB loss switched on; the decay continues from the global t.

All random draws (pixels, crops, jitter) come from generators seeded by (seed, iteration), so a run
resumed from a checkpoint draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as nnf
from safetensors import safe_open
from safetensors.torch import save_file

from ovs3d.errors import InputError
from ovs3d.features.cache import FeatureMaps
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.io.atomic import atomic_path, write_json_atomic
from ovs3d.render.volume import RaySamples, march
from ovs3d.features.relevancy import apply_ranges, cosine_maps, minmax_ranges
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.scene import Scene
from ovs3d.train.checkpoint import field_from_checkpoint, restore_optimizer
from ovs3d.train.losses import fda_loss, feature_distillation_loss, relevancy_alignment_loss, rgb_loss
from ovs3d.train.reconstruct import scene_rays
from ovs3d.train.schedule import marching_step

if TYPE_CHECKING:
    from ovs3d.features.extract import ExtractConfig

PresetName = Literal["paper", "cpu", "test"]


@dataclass
class SegmentConfig:
    """Stage-2 hyperparameters (defaults = the paper's, method spec 6.5-6.8)."""

    mode: Literal["faithful", "improved"] = "faithful"
    """Semantic field mode (see ``ovs3d/field/semantic.py``)."""
    iterations: int = 15000
    """Training iterations (n_iters)."""
    joint_start_iter: int = 5000
    """Iteration at which appearance is unfrozen, the RGB loss starts and a fresh optimiser is made."""
    batch_size: int = 4096
    """CLIP-branch rays per iteration."""
    patch_num: int = 8
    """DINO crops per iteration."""
    patch_size: int = 256
    """DINO crop size in pixels at the DINO maps' resolution (tokens per side = patch_size / 8)."""
    samples_per_ray: int = 482
    """Marching step = box diagonal / samples_per_ray (482 = the authors' count from N_voxel_init);
    0 = stage 1's own step (one consistent sample spacing for stage 1, stage 2 and rendering)."""
    lr_grid: float = 0.02
    """Learning rate of the selection planes and lines (lr_init)."""
    lr_network: float = 1e-4
    """Learning rate of the feature head and the selection basis (lr_basis)."""
    lr_app_grid: float = 5e-3
    """Learning rate of the appearance planes and lines in joint mode."""
    lr_app_network: float = 5e-5
    """Learning rate of the appearance basis and shading MLP in joint mode."""
    lr_decay_ratio: float = 0.1
    """Every lr is multiplied by this over the whole run (exponential per iteration)."""
    relevancy_weight: float = 1.0
    """Weight of the RDA loss (0 skips it)."""
    dino_pos_weight: float = 200.0
    """Weight of the FDA positive term."""
    dino_neg_weight: float = 0.2
    """Weight of the FDA negative term (the per-scene knob, 0.18-0.35)."""
    dino_shift: float = 0.7
    """DINO cosine threshold b: D = cos - b."""
    temperature: float = 0.2
    """Temperature of the FDA class distributions (and of RDA in improved mode)."""
    fda_chunk: int = 128
    """Rows of the pairwise FDA term processed at once (memory/speed trade-off; exact either way)."""
    seed: int = 20230417
    """Seed of every random draw."""
    log_every: int = 10
    """TensorBoard scalars every n iterations."""
    checkpoint_every: int = 500
    """Write the resumable checkpoint every n iterations (and at the end)."""

    @property
    def rda_normalized(self) -> bool:
        """Faithful RDA uses the unnormalised F at temperature 1; improved the normalised F at ``temperature``."""
        return self.mode == "improved"

    @property
    def feature_selection_grad(self) -> bool:
        """Whether L_feat trains the selection. Faithful: yes (spec 6.5.1). Improved: no, the target is
        phi = normalize(sum_s sg(S_s) f_hat_s) and S learns only from L_RDA = JS(p(F), softmax(sum_s S_s R_s)).
        Through L_feat, S is pulled to the scale F already fits best, the smoothest (coarsest) one, a
        self-reinforcing drift (on the demo scene it settles on the coarse scale and loses the small cone); through
        RDA it is pulled to the scale whose min-max relevancies are confident and agree with F's classes."""
        return self.mode == "faithful"


PRESETS: dict[str, SegmentConfig] = {
    "paper": SegmentConfig(),
    # cpu: a few hundred iterations instead of 15k, so the head and selection basis learn 50x faster.
    # improved mode: `python -m bench.demo` trains both modes on the demo's stage 1 at 200 and 600 iterations
    # and records them (bench/results/demo_modes.json); improved scored at least as well in every case there.
    "cpu": SegmentConfig(mode="improved", iterations=600, joint_start_iter=200, batch_size=1024, patch_num=2,
                         patch_size=128, samples_per_ray=0, lr_network=5e-3, checkpoint_every=50, log_every=10),
    "test": SegmentConfig(iterations=12, joint_start_iter=6, batch_size=128, patch_num=1, patch_size=64,
                          samples_per_ray=0, checkpoint_every=4, log_every=2),
}


def preset(name: str, **overrides) -> SegmentConfig:
    if name not in PRESETS:
        raise InputError(None, f"unknown stage-2 preset '{name}'", f"use one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)


# ------------------------------------------------------------------------------------------ legacy configs
# The authors' keys that map onto SegmentConfig fields.
_LEGACY_MAP = {"n_iters": "iterations", "joint_start_iter": "joint_start_iter", "batch_size": "batch_size",
               "patch_num": "patch_num", "patch_size": "patch_size", "lr_init": "lr_grid", "lr_basis": "lr_network",
               "relevancy_weight": "relevancy_weight", "dino_pos_weight": "dino_pos_weight",
               "dino_neg_weight": "dino_neg_weight", "dino_shift": "dino_shift", "temperature": "temperature"}
# The authors' keys that ovs3d gets elsewhere (paths, the stage-1 run, the feature cache) or does not need.
_LEGACY_KNOWN = {"dataset_name", "datadir", "ckpt", "feature_dir", "basedir", "expname", "has_segmentation_maps",
                 "ray_downsample_train", "patch_downsample_train", "ndc_ray", "N_voxel_final", "upsamp_list",
                 "update_AlphaMask_list", "n_lamb_sigma", "n_lamb_sh", "fea2denseAct", "chunk_size", "clip_input",
                 "test_prompt"}
LEGACY_BOX = ((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0))


def legacy_samples_per_ray(n_voxel: int, box=LEGACY_BOX, step_ratio: float = 0.5) -> int:
    """The authors' stage-2 sample count: int(||N_to_reso(n_voxel, box)|| / step_ratio) (482 for 2,097,156)."""
    extent = np.array(box[1]) - np.array(box[0])
    voxel = (extent.prod() / n_voxel) ** (1 / 3)
    reso = np.floor(extent / voxel)
    return int(np.linalg.norm(reso) / step_ratio)


def read_legacy_config(path: str | Path, base: SegmentConfig) -> SegmentConfig:
    """Apply an authors' ``key = value`` .txt config to ``base``; warn once per unknown key."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "the legacy config file does not exist", "pass the path of an authors' configs/<scene>.txt")
    values: dict = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise InputError(path, f"line {number} is not 'key = value': {raw!r}", "fix or comment out the line")
        key, value = (part.strip() for part in line.split("=", 1))
        if key in _LEGACY_MAP:
            name = _LEGACY_MAP[key]
            kind = type(getattr(base, name))
            try:
                values[name] = kind(float(value)) if kind is int else kind(value)
            except ValueError:
                raise InputError(path, f"line {number}: {key} = {value!r} is not a number", "write a number") from None
        elif key == "N_voxel_init":
            values["samples_per_ray"] = legacy_samples_per_ray(int(float(value)))
        elif key not in _LEGACY_KNOWN:
            warnings.warn(f"{path}: unknown key '{key}' ignored", stacklevel=2)
    return replace(base, **values)


# ------------------------------------------------------------------------------------------ data
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
        kind: ``forward`` (rays in NDC) or ``360``.
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
    kind: str
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


# ------------------------------------------------------------------------------------------ trainer
class SegmentTrainer:
    """Owns the semantic field, the optimiser and the schedule; ``run`` trains with resume.

    Args:
        model: the semantic field (its base field holds the frozen stage-1 density).
        data: the training data.
        config: hyperparameters.
        out: the run folder (checkpoint.safetensors + checkpoint.json, tb/).
        device: where to train.
        meta: plain values stored in checkpoint.json (classes, encoders, stage-1 run, ...).
        stage1_step: stage 1's marching step, used when ``config.samples_per_ray`` is 0 (else 256 samples).
    """

    def __init__(self, model: SemanticField, data: SegmentationData, config: SegmentConfig, out: str | Path,
                 device: torch.device, meta: dict | None = None, stage1_step: float | None = None) -> None:
        self.model = model.to(device)
        self.data = data
        self.config = config
        self.out = Path(out)
        self.device = device
        self.meta = meta or {}
        self.text = data.text.to(device)
        if config.samples_per_ray > 0 or stage1_step is None:
            self.step = marching_step(model.base.box, config.samples_per_ray or 256)
        else:
            self.step = stage1_step
        self.iteration = 0
        self.optimizer = self._make_optimizer(joint=False)
        self.history: list[dict] = []

    # ---------------------------------------------------------------------------------------- schedule
    @property
    def joint(self) -> bool:
        return self.iteration >= self.config.joint_start_iter

    def _make_optimizer(self, joint: bool) -> torch.optim.Adam:
        cfg = self.config
        self.model.set_appearance_trainable(joint)
        groups = self.model.parameter_groups(cfg.lr_grid, cfg.lr_network, joint, cfg.lr_app_grid, cfg.lr_app_network)
        for g in groups:
            g["initial_lr"] = g["lr"]
        # the fused kernel is one pass over each parameter (about 10x faster than the per-tensor loop on CPU)
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(groups, betas=(0.9, 0.99), fused=fused)

    def _set_lr(self) -> None:
        factor = self.config.lr_decay_ratio ** (self.iteration / max(self.config.iterations, 1))
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor

    # ---------------------------------------------------------------------------------------- one step
    def _march(self, cams, view, u, v, generator) -> tuple[RaySamples, torch.Tensor]:
        """The frozen density's packed samples of the rays through (u, v) of ``cams[view]``, and the rays'
        unit directions [B, 3]."""
        o, d = scene_rays(cams, view, u, v, self.data.kind)
        o, d = o.to(self.device), d.to(self.device)
        with torch.no_grad():
            samples = march(self.model.base, o, d, self.step, generator)
        return samples, nnf.normalize(d, dim=-1)

    def _render(self, marched: list[tuple[RaySamples, torch.Tensor]], with_selection: list[bool],
                with_rgb: list[bool]) -> list[dict[str, torch.Tensor]]:
        """Render several ray sets, with the appearance feature of all their samples looked up in one
        call: each appearance plane then gets one gradient buffer per iteration, not one per ray set
        (at the paper's 806^2 planes each extra buffer cost a plane-sized zero fill and sum)."""
        appearance = self.model.base.appearance_feature(torch.cat([s.xyz for s, _ in marched]))
        parts = appearance.split([s.n_kept for s, _ in marched])
        return [self.model.render(s.xyz, s.weights, s.ray_index, s.n_rays, viewdirs=d[s.ray_index] if rgb else None,
                                  with_selection=sel, appearance=a)
                for (s, d), a, sel, rgb in zip(marched, parts, with_selection, with_rgb)]

    def train_step(self) -> dict[str, float]:
        """One iteration at ``self.iteration``; returns the (unweighted) loss values."""
        cfg, data = self.config, self.data
        if self.iteration == cfg.joint_start_iter:
            self.optimizer = self._make_optimizer(joint=True)
        self._set_lr()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.iteration)
        jitter = torch.Generator(device=self.device).manual_seed(cfg.seed * 104729 + self.iteration)
        h, w = data.clip_hw
        batch = gather_clip_batch(data, draw_clip_pixels(len(data.views), h, w, cfg.batch_size, self.iteration, cfg.seed))
        marched = [self._march(data.clip_cameras, batch["view"], batch["u"], batch["v"], jitter)]
        fda = (cfg.dino_pos_weight > 0 or cfg.dino_neg_weight > 0) and data.dino is not None and cfg.patch_num > 0
        if fda:
            patches = draw_dino_patches(data, cfg.patch_num, cfg.patch_size, gen)
            marched.append(self._march(data.dino_cameras, patches["view"], patches["u"], patches["v"], jitter))
        out, *patch_out = self._render(marched, with_selection=[True, False], with_rgb=[self.joint, False])
        clip = batch["clip"].to(self.device)
        logs: dict[str, float] = {}
        loss = feature_distillation_loss(out["features"], out["selection"], clip, cfg.feature_selection_grad)
        logs["feature_loss"] = float(loss.detach())
        if cfg.relevancy_weight > 0:
            rda = relevancy_alignment_loss(out["features"], self.text, out["selection"],
                                           batch["relevancy"].to(self.device), cfg.rda_normalized,
                                           cfg.temperature if cfg.rda_normalized else 1.0)
            loss = loss + cfg.relevancy_weight * rda
            logs["relevancy_loss"] = float(rda.detach())
        if self.joint:
            mse = rgb_loss(out["rgb"], batch["rgb"].to(self.device))
            loss = loss + mse
            logs["rgb_mse"] = float(mse.detach())
        if fda:
            pout = patch_out[0]
            n = cfg.patch_num
            pos, neg = fda_loss(pout["features"].view(n, -1, pout["features"].shape[-1]), self.text,
                                patches["dino"].to(self.device), cfg.temperature, cfg.dino_shift, cfg.fda_chunk)
            loss = loss + cfg.dino_pos_weight * pos + cfg.dino_neg_weight * neg
            logs["dino_pos_loss"], logs["dino_neg_loss"] = float(pos.detach()), float(neg.detach())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        logs["loss"] = float(loss.detach())
        self.iteration += 1
        return logs

    # ---------------------------------------------------------------------------------------- run
    def run(self, progress: bool = True, stop_after: int | None = None) -> dict:
        """Train to ``config.iterations`` (from the current iteration), checkpointing as configured.

        ``stop_after``: return after this many iterations of this call (used by tests to simulate a kill).
        Returns a summary: seconds per iteration, final losses.
        """
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.config
        writer = SummaryWriter(str(self.out / "tb"))
        bar = tqdm(total=cfg.iterations, initial=self.iteration, disable=not progress, desc="segment")
        start, done, logs = time.perf_counter(), 0, {}
        try:
            while self.iteration < cfg.iterations and (stop_after is None or done < stop_after):
                logs = self.train_step()
                done += 1
                bar.update(1)
                if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                    for key, value in logs.items():
                        writer.add_scalar(f"train/{key}", value, self.iteration)
                    bar.set_postfix(feat=f"{logs['feature_loss']:.3f}")
                if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                    self.save()
        finally:
            bar.close()
            writer.close()
        elapsed = time.perf_counter() - start
        return {"iterations_run": done, "s_per_iter": elapsed / max(done, 1), "last": logs,
                "complete": self.iteration >= cfg.iterations}

    # ---------------------------------------------------------------------------------------- checkpoint
    def save(self) -> None:
        """Write the run's checkpoint (``save_segmentation``) with the optimiser state."""
        info = {"iteration": self.iteration, "complete": self.iteration >= self.config.iterations,
                "joint": self.joint, "config": asdict(self.config), **self.meta}
        save_segmentation(self.out, self.model, self.data.text, info, self.optimizer)

    def load(self) -> bool:
        """Resume from the run folder's checkpoint if there is one; True when loaded."""
        if not (self.out / CHECKPOINT).is_file():
            return False
        tensors, meta = read_segmentation(self.out, self.device)
        self.model.load_state_dict(model_state(tensors))
        self.iteration = meta["iteration"]
        self.optimizer = self._make_optimizer(joint=meta["joint"])
        restore_optimizer(self.optimizer, tensors, meta)
        return True


# ------------------------------------------------------------------------------------------ run files
CHECKPOINT = "checkpoint.safetensors"
FORMAT = "ovs3d-segment-1"


def save_segmentation(run_dir: str | Path, model: SemanticField, text: torch.Tensor, info: dict,
                      optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write ``checkpoint.safetensors`` (+ ``checkpoint.json``) atomically, in the stage-1 layout:
    ``field.*`` (the base field, fine-tuned appearance included), ``occupancy.*``, ``semantic.*`` (head and
    selection volume), ``text`` [C, 512], ``optim.*``; the JSON metadata (format, arch, semantic config,
    optimiser groups and ``info``) lives in the safetensors header and is mirrored to checkpoint.json."""
    run_dir = Path(run_dir)
    base = model.base
    tensors = {f"field.{k}": v.detach().contiguous().cpu() for k, v in base.state_dict().items()}
    tensors.update({f"semantic.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()
                    if not k.startswith("base.")})
    tensors["text"] = text.detach().float().contiguous().cpu()
    meta = {"format": FORMAT, "arch": base.arch(), "semantic": asdict(model.config), **info}
    if base.occupancy is not None:
        tensors["occupancy.mask"] = base.occupancy.mask.to(torch.uint8).contiguous().cpu()
        tensors["occupancy.box"] = base.occupancy.box.contiguous().cpu()
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, slots in state["state"].items():
            for key, value in slots.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
        meta["optimizer"] = state["param_groups"]
    with atomic_path(run_dir / CHECKPOINT) as tmp:
        save_file(tensors, str(tmp), metadata={"checkpoint": json.dumps(meta)})
    write_json_atomic(run_dir / "checkpoint.json", meta)


def read_segmentation(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of a stage-2 checkpoint; InputError when missing or of another kind."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise InputError(path, "no stage-2 checkpoint here", "run `ovs3d segment` first, or pass its run folder")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = json.loads((f.metadata() or {}).get("checkpoint", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputError(path, f"cannot read the checkpoint ({exc})", "rerun `ovs3d segment --resume`") from exc
    if meta.get("format") != FORMAT:
        raise InputError(path, f"not an ovs3d stage-2 checkpoint (format {meta.get('format')!r})",
                         "pass the folder of an `ovs3d segment` run")
    return tensors, meta


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SemanticField state_dict held by checkpoint tensors."""
    state = {f"base.{k[len('field.'):]}": v for k, v in tensors.items() if k.startswith("field.")}
    state.update({k[len("semantic."):]: v for k, v in tensors.items() if k.startswith("semantic.")})
    return state


def load_segmentation(run_dir: str | Path, device: torch.device | str = "cpu") -> tuple[SemanticField, torch.Tensor, dict]:
    """(semantic field ready for inference, text embeddings [C, 512], metadata) of a stage-2 run."""
    tensors, meta = read_segmentation(run_dir, device)
    base = field_from_checkpoint(tensors, meta, device)
    sem = meta["semantic"]
    sem["selection_components"] = tuple(sem["selection_components"])
    model = SemanticField(base, SemanticConfig(**sem)).to(device)
    model.load_state_dict(model_state(tensors))
    model.eval()
    return model, tensors["text"].to(device), meta


def config_from_dict(values: dict) -> SegmentConfig:
    """A SegmentConfig from ``asdict`` output (unknown keys ignored)."""
    names = {f.name for f in fields(SegmentConfig)}
    return SegmentConfig(**{k: v for k, v in values.items() if k in names})



# ------------------------------------------------------------------------------------------ entry point
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
                            clip_cameras=scene.cameras.resized(w, h), dino_cameras=dino_cams, kind=scene.kind,
                            dino_stride=stride)


def segment(stage1: str | Path, out: str | Path, config: SegmentConfig, extract: "ExtractConfig",
            scene_root: str | Path | None = None, classes: list[str] | None = None, resume: bool = False,
            device: str = "auto", progress: bool = True) -> dict:
    """Train (or resume) a stage-2 run in ``out`` on top of the stage-1 run ``stage1``.

    The scene defaults to the one stage 1 was trained on; the classes to its ``segmentations/classes.txt``.
    Feature caches are extracted first when missing (``features.extract``). Returns the summary also
    written to ``out/train_summary.json``.
    """
    from ovs3d.device import resolve_device
    from ovs3d.features.registry import build_image_text_encoder
    from ovs3d.features.extract import extract_clip, extract_dino
    from ovs3d.features.relevancy import text_embeddings
    from ovs3d.scene.annotations import read_classes
    from ovs3d.scene.load import load_scene
    from ovs3d.train.checkpoint import load_field

    out = Path(out)
    dev = resolve_device(device)
    if not resume and (out / CHECKPOINT).exists():
        raise InputError(out / CHECKPOINT, "this run folder already holds a stage-2 checkpoint",
                         "pass --resume to continue it, or choose another --out")
    base, base_meta = load_field(stage1, dev)
    scene_root = Path(scene_root or base_meta["scene"])
    scene = load_scene(scene_root, load_annotations=False)
    class_file = scene_root / "segmentations" / "classes.txt"
    classes = list(classes or (read_classes(class_file) if class_file.is_file() else []))
    if not classes:
        raise InputError(scene_root / "segmentations" / "classes.txt", "no class list",
                         "write one class prompt per line in segmentations/classes.txt, or pass --classes")
    use_dino = config.dino_pos_weight > 0 or config.dino_neg_weight > 0
    clip_folder = extract_clip(scene_root, extract)
    dino_folder = extract_dino(scene_root, extract) if use_dino else None
    encoder = build_image_text_encoder(extract.clip, dev)
    text = text_embeddings(encoder, classes).cpu()
    data = prepare_data(scene, clip_folder, dino_folder, text)
    model = SemanticField(base, SemanticConfig(mode=config.mode, feature_dim=int(text.shape[1])),
                          torch.Generator().manual_seed(config.seed))
    builtin = extract.clip.kind == "builtin" or (use_dino and extract.dino.kind == "builtin")
    meta = {"scene": str(scene_root), "stage1": str(Path(stage1).resolve()), "classes": classes,
            "encoders": {"clip": data.clip.encoder, "dino": data.dino.encoder if data.dino else "unused"},
            "builtin_encoders": builtin, "clip_cache": str(clip_folder),
            "dino_cache": str(dino_folder) if dino_folder else None, "clip_resolution": list(data.clip_hw[::-1]),
            "clip_config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(extract.clip).items()},
            "stage1_step": float(base_meta["step"])}
    trainer = SegmentTrainer(model, data, config, out, dev, meta, stage1_step=float(base_meta["step"]))
    if resume:
        trainer.load()
    summary = trainer.run(progress=progress)
    summary.update({"iteration": trainer.iteration, "device": str(dev), **meta})
    write_json_atomic(out / "train_summary.json", summary)
    return summary
