"""Stage 1: fit a TensoRF to the posed images of a forward-facing scene (method spec section 3).

Per iteration t (0-based), with gamma = target^(1/decay_iters) and t_reset the iteration after the last
optimiser reset (0, or an upsampling iteration + 1):

    rays      ``batch_size`` pixels drawn uniformly from the training images (no ray table is built)
    loss      MSE(C, C_gt) + 0.01 * lambda_t * (TV(density planes) * w_d + TV(appearance planes) * w_a),
              lambda_t = gamma^t (TV weights decay with the lr and are never reset)
    lr        lr_grid * gamma^(t - t_reset) for planes/lines, lr_network * gamma^(t - t_reset) for basis + MLP
    C         rendered with a white background with probability ``white_background_prob`` (0.5 for LLFF in
              the authors' code; the GT is unchanged), a black one otherwise and at evaluation
    schedule  after iteration t in ``alpha_mask_iters``: build the occupancy grid (the first one also shrinks
              the box); after t in ``upsample_iters``: resize the grids to the next log-spaced voxel count,
              recompute the sample count, and create a fresh Adam at the initial lrs.

The run folder receives ``config.yml``, ``checkpoint.safetensors`` + ``checkpoint.json`` (every
``checkpoint_every`` iterations and at the end; ``resume=True`` continues from them, Adam and generator
state included), ``tb/`` (TensorBoard scalars), ``metrics.json`` and ``renders/``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ovs3d.device import resolve_device
from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.field.occupancy import build_occupancy
from ovs3d.field.tensorf import TensoRF, TensoRFConfig
from ovs3d.io.atomic import write_json_atomic, write_text_atomic
from ovs3d.render.images import depth_to_gray, render_image, scene_rays
from ovs3d.render.volume import render_rays
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.load import load_scene
from ovs3d.scene.scene import Scene
from ovs3d.train import checkpoint as ckpt
from ovs3d.train.schedule import decay_gamma, marching_step, n_to_reso, samples_per_ray, upsample_voxel_counts

NDC_BOX = ((-2.0, -2.0, -1.0), (2.0, 2.0, 1.0))
MAX_MASK_NODES = 256 ** 3


@dataclass
class ReconstructConfig:
    """Stage-1 (TensoRF) settings. Presets: ``paper`` (spec 3.4), ``cpu``, ``test``, ``authors-small``."""

    downsample: float = 2.0
    """Working resolution = the pose file's (W, H) divided by this (the paper trains at 1/2)."""
    holdout_every: int = 0
    """Hold out every n-th image for evaluation (0: train on all images, as the paper does)."""
    n_iters: int = 30000
    """Training iterations."""
    batch_size: int = 4096
    """Rays (pixels) per iteration."""
    n_voxel_init: int = 2097156
    """Initial voxel count (about 128^3)."""
    n_voxel_final: int = 262144000
    """Voxel count after the last upsampling (about 640^3)."""
    upsample_iters: tuple[int, ...] = (2000, 3000, 4000, 5500)
    """Iterations after which the grids are upsampled (voxel counts log-spaced to n_voxel_final)."""
    alpha_mask_iters: tuple[int, ...] = (2500,)
    """Iterations after which the occupancy (alpha) mask is rebuilt; the first also shrinks the box."""
    field: TensoRFConfig = field(default_factory=TensoRFConfig)
    """Field architecture."""
    lr_grid: float = 0.02
    """Initial learning rate of planes and lines (lr_init)."""
    lr_network: float = 1e-4
    """Initial learning rate of the basis matrix and shading MLP (lr_basis; 3D-OVS 1e-4, upstream TensoRF 1e-3)."""
    lr_decay_target: float = 0.1
    """The lr decays exponentially to this fraction over lr_decay_iters."""
    lr_decay_iters: int = -1
    """Iterations of the decay (-1: n_iters)."""
    tv_weight_density: float = 1.0
    """TV weight on the density planes (times 0.01, decaying with the lr)."""
    tv_weight_appearance: float = 1.0
    """TV weight on the appearance planes (times 0.01, decaying with the lr)."""
    step_ratio: float = 0.5
    """Samples per ray N = int(||reso|| / step_ratio) over the box diagonal."""
    max_samples: int = 1_000_000
    """Cap on N (nSamples)."""
    weight_threshold: float = 1e-4
    """Appearance is evaluated only at samples with weight above this (rayMarch_weight_thres)."""
    alpha_mask_threshold: float = 1e-4
    """Occupancy threshold on the pooled alpha (alpha_mask_thre)."""
    alpha_mask_scale_density: bool = False
    """Include the distance scale (25) in the mask's alpha; False = the authors' (TensoRF) quirk."""
    skip_empty: bool = True
    """Skip samples in empty occupancy cells before evaluating density."""
    white_background_prob: float = 0.5
    """Probability per iteration of compositing on white in training (the authors' LLFF setting)."""
    checkpoint_every: int = 1000
    """Write the checkpoint every this many iterations (and at the end)."""
    log_every: int = 20
    """TensorBoard scalar interval (iterations)."""
    render_chunk: int = 4096
    """Rays per chunk when rendering whole images."""
    render_eval: bool = True
    """Render the evaluation views into renders/ and compute PSNR/SSIM."""
    eval_every: int = 1
    """Render and score every n-th evaluation view only (1: all of them)."""
    video_frames: int = 120
    """Frames of the spiral video (0: no video)."""
    video_downsample: float = 1.0
    """The spiral video is rendered at the working resolution divided by this."""
    seed: int = 20211202
    """Seed of every random draw (initialisation, pixels, jitter, background)."""
    device: str = "auto"
    """auto | cpu | cuda | mps."""
    threads: int = 0
    """CPU threads for torch (0: torch's default). On a shared, busy CPU 1 thread can be much faster."""


PAPER = ReconstructConfig()
CPU = dataclasses.replace(
    PAPER, downsample=1.0, n_iters=1500, batch_size=1024, n_voxel_init=48 ** 3, n_voxel_final=128 ** 3,
    upsample_iters=(150, 300, 500, 750), alpha_mask_iters=(250, 800), lr_network=1e-3, alpha_mask_scale_density=True,
    checkpoint_every=250, video_frames=30, video_downsample=2.0)
TEST = dataclasses.replace(
    PAPER, downsample=1.0, holdout_every=4, n_iters=120, batch_size=512, n_voxel_init=24 ** 3,
    n_voxel_final=48 ** 3, upsample_iters=(30, 60), alpha_mask_iters=(45,), checkpoint_every=30, log_every=10,
    video_frames=2, video_downsample=2.0)
AUTHORS_SMALL = dataclasses.replace(
    PAPER, n_iters=600, batch_size=1024, n_voxel_init=64 ** 3, n_voxel_final=128 ** 3,
    upsample_iters=(150, 250, 350, 450), alpha_mask_iters=(200,), checkpoint_every=600)
PRESETS: dict[str, ReconstructConfig] = {"paper": PAPER, "cpu": CPU, "test": TEST, "authors-small": AUTHORS_SMALL}


class Reconstruction:
    """A stage-1 training run: the scene, the field, the optimiser and the schedule state.

    ``train_step`` runs one iteration; ``run`` trains to ``n_iters`` with checkpoints; ``evaluate``
    renders the evaluation views. ``resume=True`` restores field, occupancy, Adam and generator state.
    """

    def __init__(self, scene_path: str | Path, out: str | Path, config: ReconstructConfig,
                 resume: bool = False, scene: Scene | None = None) -> None:
        self.config = config
        self.out = Path(out)
        self.device = resolve_device(config.device)
        if config.threads > 0:
            torch.set_num_threads(config.threads)
        if not resume and (self.out / ckpt.CHECKPOINT).exists():
            raise InputError(self.out / ckpt.CHECKPOINT, "this run folder already holds a stage-1 checkpoint",
                             "pass --resume to continue it, or choose another --out")
        self.scene = scene or load_scene(scene_path, downsample=config.downsample,
                                         holdout_every=config.holdout_every, load_annotations=False)
        if self.scene.kind != "forward":
            raise InputError(self.scene.root, f"stage 1 supports forward-facing (LLFF-style) scenes; this scene "
                             f"looks {self.scene.kind}", "pass a forward-facing capture")
        if not self.scene.train_views:
            raise InputError(self.scene.root, "no training views", "use a smaller --holdout-every")
        self.images = self.scene.images_tensor(self.device)
        self.cameras = self.scene.cameras.to(self.device)
        self.train_views = torch.tensor(self.scene.train_views, device=self.device)
        self.gamma = decay_gamma(config.lr_decay_target,
                                 config.n_iters if config.lr_decay_iters < 0 else config.lr_decay_iters)
        self.voxel_counts = upsample_voxel_counts(config.n_voxel_init, config.n_voxel_final,
                                                  len(config.upsample_iters))
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.iteration = 0
        self.reset_iteration = 0
        self.mask_reso: tuple[int, int, int] | None = None
        self.elapsed = 0.0
        self.iteration_seconds: list[float] = []   # wall time of each iteration run by ``run`` (this process)
        if resume and (self.out / ckpt.CHECKPOINT).exists():
            self._restore()
        else:
            box = torch.tensor(NDC_BOX)
            init = torch.Generator().manual_seed(config.seed)
            self.field = TensoRF(box, n_to_reso(config.n_voxel_init, box), config.field, init).to(self.device)
            self._new_optimizer()
        self._update_step()

    # ------------------------------------------------------------------------------------------- state
    def _new_optimizer(self) -> None:
        self.optimizer = torch.optim.Adam(self.field.parameter_groups(self.config.lr_grid, self.config.lr_network),
                                          betas=(0.9, 0.99))
        self.initial_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def _update_step(self) -> None:
        self.n_samples = samples_per_ray(self.field.reso, self.config.step_ratio, self.config.max_samples)
        self.step = marching_step(self.field.box, self.n_samples)

    def _state(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "reset_iteration": self.reset_iteration,
                "mask_reso": list(self.mask_reso) if self.mask_reso else None, "elapsed_s": self.elapsed,
                "n_samples": self.n_samples, "step": self.step, "scene": str(Path(self.scene.root).resolve()),
                "kind": self.scene.kind, "width": self.scene.width, "height": self.scene.height,
                "config": to_plain(self.config)}

    def save(self) -> None:
        ckpt.save_checkpoint(self.out, self.field, self._state(), self.optimizer, {"train": self.generator})

    def _restore(self) -> None:
        tensors, meta = ckpt.load_checkpoint(self.out, self.device)
        self.field = ckpt.field_from_checkpoint(tensors, meta, self.device)
        self._new_optimizer()
        ckpt.restore_optimizer(self.optimizer, tensors, meta)
        ckpt.restore_generator(self.generator, tensors, "train")
        self.iteration = int(meta["iteration"])
        self.reset_iteration = int(meta["reset_iteration"])
        self.mask_reso = tuple(meta["mask_reso"]) if meta.get("mask_reso") else None
        self.elapsed = float(meta.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------------------------------- training
    def sample_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(origins, dirs, rgb) for ``batch_size`` uniformly drawn training pixels."""
        g, dev = self.generator, self.device
        view = self.train_views[torch.randint(len(self.train_views), (batch_size,), generator=g, device=dev)]
        col = torch.randint(self.scene.width, (batch_size,), generator=g, device=dev)
        row = torch.randint(self.scene.height, (batch_size,), generator=g, device=dev)
        origins, dirs = scene_rays(self.cameras, view, col.float() + 0.5, row.float() + 0.5, self.scene.kind)
        return origins, dirs, self.images[view, row, col]

    def train_step(self, skip_empty: bool | None = None, weight_threshold: float | None = None) -> dict[str, float]:
        """One optimisation step at ``self.iteration`` (schedule applied after it); returns loss and PSNR."""
        cfg, it = self.config, self.iteration
        decay = self.gamma ** (it - self.reset_iteration)
        for group, lr0 in zip(self.optimizer.param_groups, self.initial_lrs):
            group["lr"] = lr0 * decay
        origins, dirs, target = self.sample_batch(cfg.batch_size)
        white = float(torch.rand((), generator=self.generator, device=self.device)) < cfg.white_background_prob
        out = render_rays(self.field, origins, dirs, self.step, background=1.0 if white else 0.0,
                          generator=self.generator,
                          skip_empty=cfg.skip_empty if skip_empty is None else skip_empty,
                          weight_threshold=cfg.weight_threshold if weight_threshold is None else weight_threshold)
        mse = torch.mean((out["rgb"] - target) ** 2)
        loss = mse
        tv_scale = 0.01 * self.gamma ** it
        if cfg.tv_weight_density > 0:
            loss = loss + tv_scale * cfg.tv_weight_density * self.field.tv_density()
        if cfg.tv_weight_appearance > 0:
            loss = loss + tv_scale * cfg.tv_weight_appearance * self.field.tv_appearance()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        samples = out["samples"]
        stats = {"loss": float(loss.detach()), "mse": float(mse.detach()), "psnr": -10 * math.log10(max(float(mse.detach()), 1e-10)),
                 "lr_grid": self.optimizer.param_groups[0]["lr"], "samples_per_ray": self.n_samples,
                 "density_samples": samples.n_density / cfg.batch_size,
                 "appearance_samples": samples.n_kept / cfg.batch_size}
        self.apply_schedule(it)
        self.iteration = it + 1
        return stats

    @torch.no_grad()
    def apply_schedule(self, it: int) -> None:
        """Alpha mask (+ first-time box shrink) and upsampling after iteration ``it``."""
        cfg = self.config
        if it in cfg.alpha_mask_iters:
            reso = self.field.reso
            if math.prod(reso) < MAX_MASK_NODES or self.mask_reso is None:
                self.mask_reso = reso
            self.field.occupancy = build_occupancy(self.field, self.step, cfg.alpha_mask_threshold,
                                                   cfg.alpha_mask_scale_density, reso=self.mask_reso)
            if it == cfg.alpha_mask_iters[0]:
                self.field.shrink(self.field.occupancy.occupied_box())
                self._update_step()
                self._new_optimizer()   # TensoRF keeps the old Adam here, which leaves the cropped grids
                                        # frozen until the next upsampling; we optimise them at once
        if it in cfg.upsample_iters:
            k = sorted(cfg.upsample_iters).index(it)
            self.field.upsample(n_to_reso(self.voxel_counts[k], self.field.box))
            self._update_step()
            self._new_optimizer()
            self.reset_iteration = it + 1

    def run(self, progress: bool = True) -> None:
        """Train from ``self.iteration`` to ``n_iters`` with TensorBoard logging and periodic checkpoints."""
        from torch.utils.tensorboard import SummaryWriter
        from tqdm import tqdm

        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.out / "config.yml", yaml.safe_dump(to_plain(cfg), sort_keys=False))
        writer = SummaryWriter(str(self.out / "tb"), purge_step=self.iteration)
        bar = tqdm(range(self.iteration, cfg.n_iters), initial=self.iteration, total=cfg.n_iters,
                   disable=not progress, desc="reconstruct", dynamic_ncols=True)
        psnr_avg = None
        start = time.perf_counter()
        base = self.elapsed
        for it in bar:
            tick = time.perf_counter()
            stats = self.train_step()
            self.iteration_seconds.append(time.perf_counter() - tick)
            self.elapsed = base + time.perf_counter() - start
            psnr_avg = stats["psnr"] if psnr_avg is None else 0.9 * psnr_avg + 0.1 * stats["psnr"]
            if it % 10 == 0:
                bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{psnr_avg:.2f}", n=self.n_samples)
            if it % cfg.log_every == 0:
                for key, value in stats.items():
                    writer.add_scalar(f"train/{key}", value, it)
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.n_iters:
                self.save()
        bar.close()
        writer.close()

    # -------------------------------------------------------------------------------------- rendering
    @torch.no_grad()
    def render_image(self, cameras: Cameras, view: int) -> dict[str, torch.Tensor]:
        """Render one camera: {"rgb": [H, W, 3], "depth": [H, W], "acc": [H, W]} (black background)."""
        return render_image(self.field, cameras, view, self.scene.kind, self.step, self.config.render_chunk)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Render the evaluation views (held out, or all training views; every ``eval_every``-th of them) into
        renders/; PSNR and SSIM."""
        from ovs3d.eval.metrics import psnr, ssim
        from ovs3d.io.images import write_png

        held_out = bool(self.scene.test_views)
        views = (self.scene.test_views if held_out else self.scene.train_views)[::max(self.config.eval_every, 1)]
        rows = []
        for view in views:
            out = self.render_image(self.cameras, view)
            gt = self.images[view]
            rows.append({"view": view, "image": self.scene.image_paths[view].name,
                         "psnr": psnr(out["rgb"], gt), "ssim": ssim(out["rgb"], gt)})
            stem = self.out / "renders" / f"{view:03d}"
            write_png(f"{stem}_rgb.png", out["rgb"].cpu().numpy())
            write_png(f"{stem}_depth.png", depth_to_gray(out["depth"]))
        return {"split": "held-out" if held_out else "train", "views": rows,
                "psnr": float(np.mean([r["psnr"] for r in rows])), "ssim": float(np.mean([r["ssim"] for r in rows]))}

    @torch.no_grad()
    def render_spiral(self) -> Path | None:
        """The spiral video (renders/spiral.mp4, or .gif without ffmpeg); None when video_frames is 0."""
        if self.config.video_frames <= 0:
            return None
        from ovs3d.io.images import to_uint8
        from ovs3d.io.video import write_video
        from ovs3d.scene.paths import spiral_path

        path = spiral_path(self.scene.cameras, self.scene.bounds, self.config.video_frames)
        path = path.downsampled(self.config.video_downsample).to(self.device)
        frames = [to_uint8(render_image(self.field, path, i, self.scene.kind, self.step,
                                        self.config.render_chunk)["rgb"].cpu().numpy()) for i in range(len(path))]
        return write_video(self.out / "renders" / "spiral.mp4", frames)


def reconstruct(scene: str | Path, out: str | Path, config: ReconstructConfig, resume: bool = False,
                progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a stage-1 run in ``out``, then evaluate and render; returns the metrics dict
    (also written to ``out/metrics.json``)."""
    run = Reconstruction(scene, out, config, resume=resume)
    run.run(progress=progress)
    metrics: dict[str, Any] = {"scene": str(run.scene.root), "iterations": run.iteration,
                               "train_seconds": run.elapsed,
                               "seconds_per_iteration": run.elapsed / max(run.iteration, 1),
                               "reso": list(run.field.reso), "samples_per_ray": run.n_samples,
                               "box": run.field.box.tolist()}
    if config.render_eval:
        metrics.update(run.evaluate())
    video = run.render_spiral()
    if video is not None:
        metrics["video"] = str(video.relative_to(run.out))
    write_json_atomic(run.out / "metrics.json", metrics)
    return metrics
