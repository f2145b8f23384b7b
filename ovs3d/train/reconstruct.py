"""Stage 1: fit a TensoRF to the posed images of a scene (method spec section 3).

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

The ray space is chosen once from the scene (``scene/rayspace.py``, printed with its reason) and stored
in the checkpoint. The run folder (``runs/store.py``) receives ``config.yml``, ``checkpoint.safetensors``
+ ``checkpoint.json`` (every ``checkpoint_every`` iterations and at the end; ``resume=True`` continues
from them, Adam and generator state included), ``tb/`` (TensorBoard scalars), ``train_summary.json``,
``metrics.json`` and ``renders/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ovs3d.config import to_plain
from ovs3d.errors import InputError
from ovs3d.field.occupancy import build_occupancy
from ovs3d.field.shading import resolve_precision
from ovs3d.field.tensorf import TensoRF
from ovs3d.io.atomic import write_json_atomic
from ovs3d.io.images import to_uint8, write_png
from ovs3d.io.lock import folder_lock
from ovs3d.io.video import write_video
from ovs3d.render.camera import depth_to_gray, render_camera
from ovs3d.render.quality import psnr, ssim
from ovs3d.render.volume import render_rays
from ovs3d.runs.load import build_field, field_sections, occupancy_info
from ovs3d.runs.record import RunRecord
from ovs3d.runs.store import CHECKPOINT, check_fresh, generator_section, optimizer_section, read_run, restore_optimizer, \
    write_config, write_run
from ovs3d.scene.cameras import Cameras
from ovs3d.scene.load import load_scene
from ovs3d.scene.paths import video_path
from ovs3d.scene.rayspace import choose_space
from ovs3d.scene.scene import Scene
from ovs3d.train.configs import ReconstructConfig
from ovs3d.train.loop import train_loop
from ovs3d.train.schedule import decay_gamma, marching_step, n_to_reso, samples_per_ray, upsample_voxel_counts

MAX_MASK_NODES = 256 ** 3


class Reconstruction:
    """A stage-1 training run: the scene, the field, the optimiser and the schedule state.

    ``train_step`` runs one iteration; ``run`` trains to ``n_iters`` with checkpoints (``train/loop.py``);
    ``evaluate`` renders the evaluation views. ``resume=True`` restores field, occupancy, Adam and
    generator state. ``log`` receives one-line messages (the chosen ray space).
    """

    def __init__(self, scene_path: str | Path, out: str | Path, config: ReconstructConfig,
                 resume: bool = False, scene: Scene | None = None, device: torch.device | str = "cpu",
                 log: Callable[[str], None] = print) -> None:
        config.check()
        config = config.scheduled()
        self.config = config
        self.out = Path(out)
        self.device = torch.device(device)
        check_fresh(self.out, resume)
        self.scene = scene or load_scene(scene_path, downsample=config.downsample,
                                         holdout_every=config.holdout_every, load_annotations=False)
        if not self.scene.train_views:
            raise InputError(self.scene.root, "no training views", "use a smaller --reconstruct.holdout-every")
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
        self.iteration_seconds: list[float] = []   # wall time of each iteration of the last ``run``
        if resume and (self.out / CHECKPOINT).exists():
            self._restore()
        else:
            space, reason = choose_space(self.scene, config.space)
            log(f"ray space: {reason}")
            box = space.box_tensor()
            init = torch.Generator().manual_seed(config.seed)
            self.field = TensoRF(space, n_to_reso(config.n_voxel_init, box), config.field, init).to(self.device)
            self._new_optimizer()
        self.alpha = self._object_alpha()
        self.field.set_shading(resolve_precision(config.mlp_precision, self.device), config.compile, log)
        self._update_step()

    def _object_alpha(self) -> torch.Tensor | None:
        """[N, H, W] object masks of a 360 capture with masks/ (``scene/masks.py``), whatever its ray space:
        the images become m C on black, targets m C + (1 - m) b for the iteration's background b, and
        evaluation compares against m C rendered on black. None otherwise (forward-facing captures keep their
        background: statue_504's masks/ are inpainting masks, not a background to remove)."""
        if self.scene.object_masks is None or self.scene.kind == "forward":
            return None
        alpha = torch.from_numpy(self.scene.object_masks).to(self.device)
        self.images = self.images * alpha[..., None]
        return alpha

    @property
    def total(self) -> int:
        return self.config.n_iters

    # ------------------------------------------------------------------------------------------- state
    def _new_optimizer(self) -> None:
        # fused: one pass over each parameter, no plane-sized temporaries (stage 2 does the same)
        self.optimizer = torch.optim.Adam(self.field.parameter_groups(self.config.lr_grid, self.config.lr_network),
                                          betas=(0.9, 0.99), fused=self.device.type in ("cpu", "cuda"))
        self.initial_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def _update_step(self) -> None:
        self.n_samples = samples_per_ray(self.field.reso, self.config.step_ratio, self.config.max_samples)
        self.step = marching_step(self.field.box, self.n_samples)

    def record(self) -> RunRecord:
        """The run record of the current state."""
        return RunRecord(stage="reconstruct", scene=str(Path(self.scene.root).resolve()),
                         space=self.field.space.to_dict(), step=self.step, width=self.scene.width,
                         height=self.scene.height, iteration=self.iteration,
                         complete=self.iteration >= self.config.n_iters, config=to_plain(self.config),
                         arch=self.field.arch(), occupancy=occupancy_info(self.field),
                         state={"reset_iteration": self.reset_iteration, "n_samples": self.n_samples,
                                "mask_reso": list(self.mask_reso) if self.mask_reso else None,
                                "elapsed_s": self.elapsed})

    def save(self) -> None:
        record = self.record()
        optim, record.optimizer = optimizer_section(self.optimizer)
        write_run(self.out, record, {**field_sections(self.field), "optim": optim,
                                     "rng": generator_section({"train": self.generator})})

    def _restore(self) -> None:
        record, sections = read_run(self.out, self.device, stage="reconstruct")
        self.field = build_field(record, sections, self.device, self.out / CHECKPOINT)
        self._new_optimizer()
        restore_optimizer(self.optimizer, sections.get("optim", {}), record.optimizer)
        self.generator.set_state(sections["rng"]["train"].cpu())
        self.iteration = record.iteration
        self.reset_iteration = int(record.state["reset_iteration"])
        self.mask_reso = tuple(record.state["mask_reso"]) if record.state.get("mask_reso") else None
        self.elapsed = float(record.state.get("elapsed_s", 0.0))

    # ---------------------------------------------------------------------------------------- training
    def sample_batch(self, batch_size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(origins, dirs, rgb, object alpha or None) for ``batch_size`` uniformly drawn training pixels."""
        g, dev = self.generator, self.device
        view = self.train_views[torch.randint(len(self.train_views), (batch_size,), generator=g, device=dev)]
        col = torch.randint(self.scene.width, (batch_size,), generator=g, device=dev)
        row = torch.randint(self.scene.height, (batch_size,), generator=g, device=dev)
        origins, dirs = self.field.space.rays(self.cameras, view, col.float() + 0.5, row.float() + 0.5)
        rgb = self.images[view, row, col]
        return origins, dirs, rgb, (self.alpha[view, row, col] if self.alpha is not None else None)

    def train_step(self, skip_empty: bool | None = None, weight_threshold: float | None = None) -> dict[str, float]:
        """One optimisation step at ``self.iteration`` (schedule applied after it); returns loss and PSNR."""
        cfg, it = self.config, self.iteration
        decay = self.gamma ** (it - self.reset_iteration)
        for group, lr0 in zip(self.optimizer.param_groups, self.initial_lrs):
            group["lr"] = lr0 * decay
        origins, dirs, target, alpha = self.sample_batch(cfg.batch_size)
        white = float(torch.rand((), generator=self.generator, device=self.device)) < cfg.white_background_prob
        if alpha is not None and white:
            target = target + (1 - alpha)[:, None]
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
        """Train from ``self.iteration`` to ``n_iters`` (``train/loop.py``), config.yml first."""
        self.out.mkdir(parents=True, exist_ok=True)
        write_config(self.out, self.config)
        stats = train_loop(self, self.out, "reconstruct", self.config.checkpoint_every, self.config.log_every,
                           progress, postfix=lambda logs: {"loss": f"{logs['loss']:.4f}", "psnr": f"{logs['psnr']:.2f}",
                                                           "n": str(self.n_samples)})
        self.iteration_seconds = stats.iteration_seconds

    # -------------------------------------------------------------------------------------- rendering
    def render_image(self, cameras: Cameras, view: int) -> dict[str, torch.Tensor]:
        """Render one camera: {"rgb": [H, W, 3], "depth": [H, W], "acc": [H, W]} (black background)."""
        return render_camera(self.field, cameras, view, self.step, chunk=self.config.render_chunk)

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Render the evaluation views (held out, or all training views; every ``eval_every``-th of them) into
        renders/; PSNR and SSIM."""
        held_out = bool(self.scene.test_views)
        views = (self.scene.test_views if held_out else self.scene.train_views)[::max(self.config.eval_every, 1)]
        rows = []
        with self.field.frozen():
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
        """The video along the scene's path (renders/spiral.mp4 for forward-facing scenes, renders/orbit.mp4
        for 360 ones; .gif without ffmpeg); None when video_frames is 0."""
        if self.config.video_frames <= 0:
            return None
        name = "spiral" if self.scene.kind == "forward" else "orbit"
        path = video_path(self.scene.cameras, self.scene.bounds, self.scene.kind, self.config.video_frames, name)
        path = path.downsampled(self.config.video_downsample).to(self.device)
        with self.field.frozen():
            frames = [to_uint8(self.render_image(path, i)["rgb"].cpu().numpy()) for i in range(len(path))]
        return write_video(self.out / "renders" / f"{name}.mp4", frames)


def reconstruct(scene: str | Path, out: str | Path, config: ReconstructConfig, resume: bool = False,
                progress: bool = True, device: torch.device | str = "cpu",
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) a stage-1 run in ``out``, then evaluate and render; returns the metrics dict
    (also written to ``out/metrics.json``)."""
    with folder_lock(out, "ovs3d reconstruct", log=log):
        return reconstruct_locked(scene, out, config, resume, progress, device, log)


def reconstruct_locked(scene: str | Path, out: str | Path, config: ReconstructConfig, resume: bool, progress: bool,
                       device: torch.device | str, log: Callable[[str], None]) -> dict[str, Any]:
    """``reconstruct`` inside the lock of its run folder."""
    run = Reconstruction(scene, out, config, resume=resume, device=device, log=log)
    run.run(progress=progress)
    metrics: dict[str, Any] = {"scene": str(Path(run.scene.root).resolve()), "iterations": run.iteration,
                               "space": run.field.space.name,
                               "train_seconds": run.elapsed,
                               "seconds_per_iteration": run.elapsed / max(run.iteration, 1),
                               "reso": list(run.field.reso), "samples_per_ray": run.n_samples,
                               "box": run.field.box.tolist()}
    with run.field.frozen():                     # evaluation and video share one set of lookup volumes
        if config.render_eval:
            metrics.update(run.evaluate())
        video = run.render_spiral()
    if video is not None:
        metrics["video"] = str(video.relative_to(run.out))
    write_json_atomic(run.out / "metrics.json", metrics)
    return metrics
