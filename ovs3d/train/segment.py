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

Schedule (spec 6.6): Adam(0.9, 0.99); every group's lr decays as lr0 * ratio^(t / iterations); at
``joint_start_iter`` a fresh Adam is created at the initial lrs with the appearance unfrozen (its own
lrs) and the RGB loss switched on; the decay continues from the global t.

All random draws (pixels, crops, jitter) come from generators seeded by (seed, iteration), so a run
resumed from a checkpoint draws exactly what the uninterrupted run would have.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf
from safetensors.torch import load_file, save_file

from ovs3d.errors import InputError
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.io.atomic import atomic_path, write_json_atomic
from ovs3d.render.volume import march
from ovs3d.scene.cameras import Cameras, ndc_rays
from ovs3d.train.losses import fda_loss, feature_distillation_loss, relevancy_alignment_loss, rgb_loss

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
    """Marching step = box diagonal / samples_per_ray (482 = the authors' count from N_voxel_init)."""
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
    fda_chunk: int = 64
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


PRESETS: dict[str, SegmentConfig] = {
    "paper": SegmentConfig(),
    "cpu": SegmentConfig(iterations=600, joint_start_iter=200, batch_size=1024, patch_num=2, patch_size=128,
                         samples_per_ray=128, checkpoint_every=200, log_every=10),
    "test": SegmentConfig(iterations=12, joint_start_iter=6, batch_size=128, patch_num=1, patch_size=64,
                          samples_per_ray=48, checkpoint_every=4, log_every=2),
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
    """Everything stage 2 reads per iteration, for V training views.

    Attributes:
        clip: V arrays [3, 512, h, w] (float16 memmaps), not necessarily normalised.
        dino: V arrays [E, hd, wd] DINO token maps (stride 8), or None when the DINO branch is off.
        rgb: [V, h, w, 3] float32 images at the CLIP feature resolution.
        text: [C, 512] L2-normalised text embeddings of the class prompts.
        clip_cameras: cameras at (w, h); dino_cameras: cameras at (8 wd, 8 hd), or None.
        ndc: forward-facing scene (rays warped to NDC with near = 1).
        views: the image index of each of the V views.
        rel_range: [V, 3, C, 2] per-image min and max of cos(f_hat_s, t_hat_c) (for min-max relevancy).
    """

    clip: Sequence[np.ndarray]
    dino: Sequence[np.ndarray] | None
    rgb: np.ndarray
    text: torch.Tensor
    clip_cameras: Cameras
    dino_cameras: Cameras | None
    ndc: bool
    views: list[int]
    rel_range: torch.Tensor = field(default=None)

    def __post_init__(self) -> None:
        if self.rel_range is None:
            self.rel_range = relevancy_ranges(self.clip, self.text)

    @property
    def clip_hw(self) -> tuple[int, int]:
        return int(self.clip[0].shape[2]), int(self.clip[0].shape[3])


def relevancy_ranges(clip: Sequence[np.ndarray], text: torch.Tensor, rows: int = 64) -> torch.Tensor:
    """[V, 3, C, 2] min and max over each image's pixels of cos(f_hat_s(x), t_hat_c), computed in row chunks."""
    out = []
    for maps in clip:
        lo = torch.full((maps.shape[0], text.shape[0]), float("inf"))
        hi = torch.full_like(lo, float("-inf"))
        for r in range(0, maps.shape[2], rows):
            f = nnf.normalize(torch.from_numpy(np.asarray(maps[:, :, r:r + rows], dtype=np.float32)), dim=1)
            cos = torch.einsum("sdhw,cd->schw", f, text).flatten(2)
            lo, hi = torch.minimum(lo, cos.amin(2)), torch.maximum(hi, cos.amax(2))
        out.append(torch.stack([lo, hi], dim=-1))
    return torch.stack(out)


def field_rays(cameras: Cameras, view: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
               ndc: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays [B, 3] through continuous pixel coordinates, warped to NDC for forward-facing scenes."""
    o, d = cameras.rays(view, u, v)
    if ndc:
        o, d = ndc_rays(o, d, cameras.fx[view.long()], cameras.width, cameras.height)
    return o, d


def draw_clip_pixels(n_views: int, h: int, w: int, batch: int, iteration: int, seed: int) -> torch.Tensor:
    """Flat pixel indices [batch] into [V, h, w] for ``iteration``: consecutive slices of per-epoch seeded
    permutations of all V h w pixels (without replacement within an epoch; a pure function of the iteration)."""
    total = n_views * h * w
    start = iteration * batch
    pieces, taken = [], 0
    while taken < batch:
        epoch, offset = divmod(start + taken, total)
        perm = torch.randperm(total, generator=torch.Generator().manual_seed(seed * 1000003 + epoch))
        piece = perm[offset:offset + batch - taken]
        pieces.append(piece)
        taken += piece.numel()
    return torch.cat(pieces)


def gather_clip_batch(data: SegmentationData, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Features f_hat [B, 3, 512], relevancies R [B, 3, C], colours [B, 3], (view, u, v) for pixels ``flat``."""
    h, w = data.clip_hw
    view, rem = torch.div(flat, h * w, rounding_mode="floor"), flat % (h * w)
    y, x = torch.div(rem, w, rounding_mode="floor"), rem % w
    feats = torch.empty(flat.shape[0], 3, data.clip[0].shape[1])
    for v in torch.unique(view).tolist():
        sel = (view == v).nonzero().squeeze(1)
        block = np.asarray(data.clip[v][:, :, y[sel].numpy(), x[sel].numpy()], dtype=np.float32)  # [3, D, k]
        feats[sel] = torch.from_numpy(block).permute(2, 0, 1)
    feats = nnf.normalize(feats, dim=-1)
    cos = torch.einsum("bsd,cd->bsc", feats, data.text)
    rng = data.rel_range[view]  # [B, 3, C, 2]
    rel = (cos - rng[..., 0]) / (rng[..., 1] - rng[..., 0]).clamp(min=1e-12)
    rgb = torch.from_numpy(data.rgb[view.numpy(), y.numpy(), x.numpy()])
    return {"clip": feats, "relevancy": rel.clamp(0, 1), "rgb": rgb, "view": view,
            "u": x.float() + 0.5, "v": y.float() + 0.5}


def draw_dino_patches(data: SegmentationData, n: int, size: int, generator: torch.Generator
                      ) -> dict[str, torch.Tensor]:
    """``n`` crops of (size/8)^2 tokens: DINO tokens [n, P, E] and the exact block-centre rays' (view, u, v)."""
    hd, wd = int(data.dino[0].shape[1]), int(data.dino[0].shape[2])
    t = max(1, min(size // 8, hd, wd))
    views = torch.randint(0, len(data.dino), (n,), generator=generator)
    tokens, vs, us, vvs = [], [], [], []
    iy, ix = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    for k in views.tolist():
        ty = int(torch.randint(0, hd - t + 1, (1,), generator=generator))
        tx = int(torch.randint(0, wd - t + 1, (1,), generator=generator))
        block = np.asarray(data.dino[k][:, ty:ty + t, tx:tx + t], dtype=np.float32)
        tokens.append(torch.from_numpy(block).flatten(1).t())
        vs.append(torch.full((t * t,), k))
        us.append(((tx + ix) * 8 + 4).flatten().float())
        vvs.append(((ty + iy) * 8 + 4).flatten().float())
    return {"dino": torch.stack(tokens), "view": torch.cat(vs), "u": torch.cat(us), "v": torch.cat(vvs)}


# ------------------------------------------------------------------------------------------ trainer
def step_size(box: torch.Tensor, samples_per_ray: int) -> float:
    """Marching step for ``samples_per_ray`` samples along the box [2, 3] diagonal."""
    return float((box[1] - box[0]).norm()) / max(samples_per_ray, 1)


class SegmentTrainer:
    """Owns the semantic field, the optimiser and the schedule; ``run`` trains with resume.

    Args:
        model: the semantic field (its base field holds the frozen stage-1 density).
        data: the training data.
        config: hyperparameters.
        out: the run folder (checkpoint.safetensors + checkpoint.json, tb/).
        device: where to train.
        meta: plain values stored in checkpoint.json (classes, encoders, stage-1 run, ...).
    """

    def __init__(self, model: SemanticField, data: SegmentationData, config: SegmentConfig, out: str | Path,
                 device: torch.device, meta: dict | None = None) -> None:
        self.model = model.to(device)
        self.data = data
        self.config = config
        self.out = Path(out)
        self.device = device
        self.meta = meta or {}
        self.text = data.text.to(device)
        self.step = step_size(model.base.box, config.samples_per_ray)
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
        return torch.optim.Adam(groups, betas=(0.9, 0.99))

    def _set_lr(self) -> None:
        factor = self.config.lr_decay_ratio ** (self.iteration / max(self.config.iterations, 1))
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * factor

    # ---------------------------------------------------------------------------------------- one step
    def _render(self, view, u, v, generator, with_selection: bool, with_rgb: bool) -> dict[str, torch.Tensor]:
        cams = self.data.clip_cameras if with_selection else self.data.dino_cameras
        o, d = field_rays(cams, view, u, v, self.data.ndc)
        o, d = o.to(self.device), d.to(self.device)
        with torch.no_grad():
            samples = march(self.model.base, o, d, self.step, generator)
        viewdirs = nnf.normalize(d, dim=-1)[samples.ray_index] if with_rgb else None
        return self.model.render(samples.xyz, samples.weights, samples.ray_index, samples.n_rays,
                                 viewdirs=viewdirs, with_selection=with_selection)

    def train_step(self) -> dict[str, float]:
        """One iteration at ``self.iteration``; returns the (unweighted) loss values."""
        cfg, data = self.config, self.data
        if self.iteration == cfg.joint_start_iter:
            self.optimizer = self._make_optimizer(joint=True)
        self._set_lr()
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + self.iteration)
        jitter = torch.Generator(device=self.device).manual_seed(cfg.seed * 104729 + self.iteration)
        h, w = data.clip_hw
        batch = gather_clip_batch(data, draw_clip_pixels(len(data.clip), h, w, cfg.batch_size, self.iteration, cfg.seed))
        out = self._render(batch["view"], batch["u"], batch["v"], jitter, with_selection=True, with_rgb=self.joint)
        clip = batch["clip"].to(self.device)
        logs: dict[str, float] = {}
        loss = feature_distillation_loss(out["features"], out["selection"], clip)
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
        if (cfg.dino_pos_weight > 0 or cfg.dino_neg_weight > 0) and data.dino is not None and cfg.patch_num > 0:
            patches = draw_dino_patches(data, cfg.patch_num, cfg.patch_size, gen)
            pout = self._render(patches["view"], patches["u"], patches["v"], jitter, with_selection=False,
                                with_rgb=False)
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
        """Write checkpoint.safetensors (field + Adam state) then checkpoint.json, each atomically.

        The json (written last) names the iteration, so a kill between the two files leaves a json
        that still matches an older, complete tensor file only if the iteration agrees (checked on load).
        """
        tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        state = self.optimizer.state_dict()
        for index, entry in state["state"].items():
            for key, value in entry.items():
                tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).reshape(-1).cpu() if key == "step" \
                    else value.detach().contiguous().cpu()
        tensors["iteration"] = torch.tensor([self.iteration])
        with atomic_path(self.out / "checkpoint.safetensors") as tmp:
            save_file(tensors, str(tmp))
        groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]}
                  for g in state["param_groups"]]
        info = {"stage": "segment", "iteration": self.iteration, "complete": self.iteration >= self.config.iterations,
                "config": asdict(self.config), "semantic": asdict(self.model.config), "base": self.model.base.arch(),
                "joint": self.joint, "param_groups": groups, **self.meta}
        write_json_atomic(self.out / "checkpoint.json", info)

    def load(self) -> bool:
        """Resume from the run folder's checkpoint if there is one; True when loaded."""
        path = self.out / "checkpoint.safetensors"
        if not path.is_file() or not (self.out / "checkpoint.json").is_file():
            return False
        info = json.loads((self.out / "checkpoint.json").read_text())
        tensors = load_file(str(path))
        if int(tensors["iteration"][0]) != info["iteration"]:
            raise InputError(path, "checkpoint.safetensors and checkpoint.json disagree on the iteration",
                             "delete the run folder's checkpoint files and train again")
        self.model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        self.model.to(self.device)
        self.iteration = info["iteration"]
        self.optimizer = self._make_optimizer(joint=info["joint"])
        states: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim."):
                _, index, name = key.split(".", 2)
                states.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value.to(self.device)
        self.optimizer.load_state_dict({"state": states, "param_groups": info["param_groups"]})
        return True


def config_from_dict(values: dict) -> SegmentConfig:
    """A SegmentConfig from ``asdict`` output (unknown keys ignored)."""
    names = {f.name for f in fields(SegmentConfig)}
    return SegmentConfig(**{k: v for k, v in values.items() if k in names})

