"""Stage configs and their presets: the same four names for every training stage.

* ``paper``: the published hyperparameters (method spec 3.4 and 6.5-6.8), for a GPU.
* ``default``: our recommended settings for a GPU: the paper's schedule with what we improved
  (each difference is named in the preset's comment, with the benchmark that favours it).
* ``cpu``: scaled for a 2-core CPU (minutes per scene).
* ``test``: tiny, seconds (the test suite).

``preset(stage, name)`` returns a stage's config; an unknown name is an InputError, never another preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from ovs3d.config import check_bounds
from ovs3d.errors import InputError
from ovs3d.field.shading import MlpPrecision
from ovs3d.field.tensorf import TensoRFConfig
from ovs3d.scene.rayspace import SpaceName

PresetName = Literal["paper", "default", "cpu", "test"]
PRESET_NAMES: tuple[str, ...] = ("paper", "default", "cpu", "test")


@dataclass
class ReconstructConfig:
    """Stage-1 (TensoRF) settings (defaults = the paper's, method spec 3.4)."""

    space: SpaceName = "auto"
    """Ray space: auto (from the camera layout: forward-facing -> ndc), ndc, box (object-centric), contracted."""
    downsample: float = 2.0
    """Working resolution = the pose file's (W, H) divided by this (the paper trains at 1/2)."""
    holdout_every: int = 0
    """Hold out every n-th image for evaluation (0: train on all images, as the paper does)."""
    n_iters: int = 30000
    """Training iterations."""
    schedule_scale: float = 1.0
    """Stretches the schedule: n_iters, upsample_iters, alpha_mask_iters, lr_decay_iters (when set) and
    checkpoint_every are multiplied by it (rounded down) when the run starts, so a longer run keeps the
    preset's shape; the grids are unchanged. config.yml records the stretched values (and 1.0 here)."""
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
    mlp_precision: MlpPrecision = "auto"
    """Shading MLP products: auto = bf16 (fp32 accumulation, weights, colour) where bf16 is native, else fp32."""
    compile: bool = False
    """torch.compile (inductor) the shading MLP, eager when no compiler works (field/shading.py; off by default)."""
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

    def check(self) -> None:
        """InputError naming the flag of the first field out of range."""
        check_bounds(self, "reconstruct",
                     at_least={"n_iters": 1, "batch_size": 1, "n_voxel_init": 8, "n_voxel_final": 8, "holdout_every": 0,
                               "max_samples": 1, "checkpoint_every": 1, "log_every": 1, "render_chunk": 1,
                               "eval_every": 1, "video_frames": 0, "lr_grid": 0, "lr_network": 0,
                               "tv_weight_density": 0, "tv_weight_appearance": 0, "white_background_prob": 0},
                     above={"downsample": 0, "step_ratio": 0, "video_downsample": 0, "lr_decay_target": 0,
                            "schedule_scale": 0},
                     at_most={"white_background_prob": 1})

    def scheduled(self) -> "ReconstructConfig":
        """This config with ``schedule_scale`` applied (and reset to 1.0): iteration i of the schedule
        becomes int(i * scale), n_iters at least 1."""
        scale = self.schedule_scale
        if scale == 1.0:
            return self
        return dataclasses.replace(
            self, schedule_scale=1.0, n_iters=max(int(self.n_iters * scale), 1),
            checkpoint_every=max(int(self.checkpoint_every * scale), 1),
            lr_decay_iters=self.lr_decay_iters if self.lr_decay_iters < 0 else max(int(self.lr_decay_iters * scale), 1),
            upsample_iters=tuple(int(i * scale) for i in self.upsample_iters),
            alpha_mask_iters=tuple(int(i * scale) for i in self.alpha_mask_iters))


@dataclass
class LiftConfig:
    """Training-free lifting (``--segment.mode instant``, ``--segment.init instant``; ``train/lift.py``)."""

    reso: int = 64
    """Most nodes per axis of the semantic grid (the field's grid scaled down to it; only touched nodes are stored)."""
    pixel_stride: int = 2
    """Every n-th pixel per axis of each view's CLIP feature map is lifted (the grid offset cycles over views)."""
    max_rays: int = 160_000
    """Ray budget of the sweep (its time is proportional to it): the stride grows from ``pixel_stride`` until
    the rays of all views fit (0: no budget)."""
    batch_rays: int = 4096
    """Rays marched and scattered at once (the sweep's memory scales with it, never with the views)."""
    weight_threshold: float = 1e-3
    """Samples whose rendering weight is at most this are not lifted (nor looked up)."""
    confidence_weighted: bool = True
    """Each ray's contribution is also weighted by its teacher's confidence c_r (``lift.ray_confidence``), so
    patches that straddle objects count less than patches that clearly show one class (False: c_r = 1)."""
    selection_temperature: float = 0.05
    """S_n = softmax(margin_s / this) over scales (small: nearly one scale per node)."""
    smooth_steps: int = 0
    """Steps of DINO-affinity smoothing of the lifted features over the 6 neighbouring nodes (0: off; reads
    the DINO cache)."""
    smooth_shift: float = 0.7
    """Affinity of neighbouring nodes = max(0, cos(DINO_n, DINO_m) - this) / (1 - this)."""
    init_steps: int = 150
    """Distillation steps of the head and selection onto the lifted grid before training (``init instant``)."""
    init_batch: int = 4096
    """Grid nodes per distillation step."""

    def check(self) -> None:
        check_bounds(self, "segment.lift", at_least={"reso": 2, "pixel_stride": 1, "max_rays": 0, "batch_rays": 1, "smooth_steps": 0,
                                                     "init_steps": 0, "init_batch": 1, "weight_threshold": 0},
                     above={"selection_temperature": 0}, at_most={"smooth_shift": 0.99})


@dataclass
class SegmentConfig:
    """Stage-2 hyperparameters (defaults = the paper's, method spec 6.5-6.8)."""

    mode: Literal["faithful", "improved", "instant"] = "faithful"
    """Semantic field mode: faithful or improved (trained, ``ovs3d/field/semantic.py``), or instant
    (lifted in one sweep without training, ``ovs3d/field/lifted.py``; the iteration settings are unused)."""
    init: Literal["random", "instant"] = "random"
    """Start of a trained mode: random (seeded initialisation) or instant (head and selection first distilled
    onto the instant lifting, so training only refines)."""
    lift: LiftConfig = field(default_factory=LiftConfig)
    """Settings of the instant lifting (mode instant and init instant)."""
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
    def uses_dino(self) -> bool:
        """Whether stage 2 reads the DINO cache: the FDA loss is on, or the lifting smooths with DINO."""
        lifting = self.mode == "instant" or self.init == "instant"
        return self.dino_pos_weight > 0 or self.dino_neg_weight > 0 or (lifting and self.lift.smooth_steps > 0)

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

    def check(self) -> None:
        """InputError naming the flag of the first field out of range."""
        self.lift.check()
        check_bounds(self, "segment",
                     at_least={"iterations": 1, "joint_start_iter": 0, "batch_size": 1, "patch_num": 0, "patch_size": 8,
                               "samples_per_ray": 0, "lr_grid": 0, "lr_network": 0, "lr_app_grid": 0,
                               "lr_app_network": 0, "relevancy_weight": 0, "dino_pos_weight": 0,
                               "dino_neg_weight": 0, "fda_chunk": 1, "log_every": 1, "checkpoint_every": 1},
                     above={"temperature": 0, "lr_decay_ratio": 0})


RECONSTRUCT_PRESETS: dict[str, ReconstructConfig] = {
    "paper": ReconstructConfig(),
    # default: upstream TensoRF's network lr (1e-3, 3D-OVS uses 1e-4) and an alpha mask whose opacity includes the
    # distance scale (TensoRF omits it, which keeps 25x more empty space); together they raised fern_504's
    # held-out PSNR from 21.67 to 22.17 dB at the cpu scale (bench.reconstruct).
    "default": ReconstructConfig(lr_network=1e-3, alpha_mask_scale_density=True),
    "cpu": ReconstructConfig(
        downsample=1.0, n_iters=1500, batch_size=1024, n_voxel_init=48 ** 3, n_voxel_final=128 ** 3,
        upsample_iters=(150, 300, 500, 750), alpha_mask_iters=(250, 800), lr_network=1e-3,
        alpha_mask_scale_density=True, checkpoint_every=250, video_frames=30, video_downsample=2.0),
    "test": ReconstructConfig(
        downsample=1.0, holdout_every=4, n_iters=120, batch_size=512, n_voxel_init=24 ** 3, n_voxel_final=48 ** 3,
        upsample_iters=(30, 60), alpha_mask_iters=(45,), checkpoint_every=30, log_every=10, video_frames=2,
        video_downsample=2.0),
}

SEGMENT_PRESETS: dict[str, SegmentConfig] = {
    "paper": SegmentConfig(),
    # default: the improved mode (a nonlinear head and selection logits that can select; bench.demo trains both
    # modes on the demo's stage 1, bench/results/demo_modes.json, and improved scored higher in every case) and
    # one sample spacing for stage 1, stage 2 and rendering (samples_per_ray 0: stage 1's own step).
    "default": SegmentConfig(mode="improved", samples_per_ray=0),
    # cpu: a few hundred iterations instead of 15k, so the head and selection basis learn 50x faster; improved mode
    # as in default.
    "cpu": SegmentConfig(mode="improved", iterations=600, joint_start_iter=200, batch_size=1024, patch_num=2,
                         patch_size=128, samples_per_ray=0, lr_network=5e-3, checkpoint_every=50, log_every=10),
    "test": SegmentConfig(iterations=12, joint_start_iter=6, batch_size=128, patch_num=1, patch_size=64,
                          samples_per_ray=0, checkpoint_every=4, log_every=2),
}

PRESETS = {"reconstruct": RECONSTRUCT_PRESETS, "segment": SEGMENT_PRESETS}


def preset(stage: Literal["reconstruct", "segment"], name: str, **overrides):
    """The ``stage``'s config of preset ``name`` with ``overrides`` applied."""
    presets = PRESETS[stage]
    if name not in presets:
        raise InputError(None, f"unknown {stage} preset {name!r}", f"use one of {list(PRESET_NAMES)}")
    return dataclasses.replace(presets[name], **overrides)
