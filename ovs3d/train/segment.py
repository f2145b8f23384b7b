"""Stage 2: train the semantic field (feature head + selection volume) on a frozen stage-1 density.

Method spec section 6; the data and ray draws are ``train/segment_data.py``. Losses
(``train/losses.py``): L = [t >= joint_start] L_rgb + L_feat + w_pos L_pos + w_neg L_neg + w_rel L_RDA.
A weight of 0 skips its branch entirely (both DINO weights 0: no DINO render at all). In improved mode
the selection S is detached inside L_feat (``SegmentConfig.feature_selection_grad``), so S is learned
from L_RDA only.

Schedule (spec 6.6): Adam(0.9, 0.99); every group's lr decays as lr0 * ratio^(t / iterations); at
``joint_start_iter`` a fresh Adam is created at the initial lrs with the appearance unfrozen (its own
lrs) and the RGB loss switched on; the decay continues from the global t.

All random draws (pixels, crops, jitter) come from generators seeded by (seed, iteration), so a run
resumed from a checkpoint draws exactly what the uninterrupted run would have.

``segment`` trains on any teacher (``SegmentationData``); feature extraction is the pipeline's job. Mode
``instant`` lifts instead of training (``train/lift.py``); ``init instant`` distils the head onto that
lifting before the first iteration (``train/warm_start.py``).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as nnf

from ovs3d.config import to_plain
from ovs3d.field.semantic import SemanticConfig, SemanticField
from ovs3d.io.lock import folder_lock
from ovs3d.render.volume import RaySamples, march
from ovs3d.runs.load import field_sections, load_run, load_state, semantic_state
from ovs3d.runs.record import RunRecord, stage2_record
from ovs3d.runs.store import CHECKPOINT, check_fresh, optimizer_section, read_run, restore_optimizer, write_config, \
    write_run
from ovs3d.train.configs import SegmentConfig
from ovs3d.train.lift import lift, lift_run
from ovs3d.train.loop import train_loop
from ovs3d.train.losses import fda_loss, feature_distillation_loss, relevancy_alignment_loss, rgb_loss
from ovs3d.train.schedule import marching_step
from ovs3d.train.segment_data import SegmentationData, draw_clip_pixels, draw_dino_patches, gather_clip_batch
from ovs3d.train.warm_start import distill_lifted


class SegmentTrainer:
    """Owns the semantic field, the optimiser and the schedule; ``train/loop.py`` runs it.

    Args:
        model: the semantic field (its radiance field holds the frozen stage-1 density).
        data: the training data (any teacher).
        config: hyperparameters.
        out: the run folder (checkpoint.safetensors + checkpoint.json, config.yml, tb/).
        device: where to train.
        record: the run record to save with every checkpoint (its iteration, state and optimiser filled in).
        stage1_step: stage 1's marching step, used when ``config.samples_per_ray`` is 0 (else 256 samples).
    """

    def __init__(self, model: SemanticField, data: SegmentationData, config: SegmentConfig, out: str | Path,
                 device: torch.device, record: RunRecord | None = None, stage1_step: float | None = None) -> None:
        self.model = model.to(device)
        self.data = data
        self.config = config
        self.out = Path(out)
        self.device = device
        self.record = record
        self.text = data.text.to(device)
        if config.samples_per_ray > 0 or stage1_step is None:
            self.step = marching_step(model.field.box, config.samples_per_ray or 256)
        else:
            self.step = stage1_step
        self.iteration = 0
        self.elapsed = 0.0
        self.optimizer = self._make_optimizer(joint=False)

    @property
    def total(self) -> int:
        return self.config.iterations

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
        o, d = self.model.field.space.rays(cams, view, u, v)
        o, d = o.to(self.device), d.to(self.device)
        with torch.no_grad():
            samples = march(self.model.field, o, d, self.step, generator)
        return samples, nnf.normalize(d, dim=-1)

    def _render(self, marched: list[tuple[RaySamples, torch.Tensor]], with_selection: list[bool],
                with_rgb: list[bool]) -> list[dict[str, torch.Tensor]]:
        """Render several ray sets, with the appearance feature of all their samples looked up in one
        call: each appearance plane then gets one gradient buffer per iteration, not one per ray set
        (at the paper's 806^2 planes each extra buffer cost a plane-sized zero fill and sum)."""
        appearance = self.model.field.appearance(torch.cat([s.xyz for s, _ in marched]))
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

    # ---------------------------------------------------------------------------------------- checkpoint
    def save(self) -> None:
        """Write the run's checkpoint: the record (iteration, joint flag, optimiser groups) and the field,
        semantic and optimiser sections."""
        record = self.record
        if record is None:
            raise ValueError("SegmentTrainer.save needs the run record: construct the trainer with record=")
        record.iteration, record.complete = self.iteration, self.iteration >= self.config.iterations
        record.state = {"joint": self.joint, "elapsed_s": self.elapsed, "train_step": self.step}
        optim, record.optimizer = optimizer_section(self.optimizer)
        semantic = {k: v for k, v in self.model.state_dict().items() if not k.startswith("field.")}
        write_run(self.out, record, {**field_sections(self.model.field), "semantic": semantic, "optim": optim})

    def load(self) -> bool:
        """Resume from the run folder's checkpoint if there is one; True when loaded."""
        if not (self.out / CHECKPOINT).is_file():
            return False
        record, sections = read_run(self.out, self.device, stage="segment")
        load_state(self.model, semantic_state(sections), self.out / CHECKPOINT)
        self.iteration = record.iteration
        self.elapsed = float(record.state.get("elapsed_s", 0.0))
        self.optimizer = self._make_optimizer(joint=bool(record.state["joint"]))
        restore_optimizer(self.optimizer, sections.get("optim", {}), record.optimizer)
        return True


def segment(stage1: str | Path, out: str | Path, config: SegmentConfig, data: SegmentationData,
            inputs: dict, resume: bool = False, device: torch.device | str = "cpu",
            progress: bool = True, stop_after: int | None = None) -> dict:
    """Train (or resume) a stage-2 run in ``out`` on the stage-1 run ``stage1`` with the teacher ``data``.

    ``inputs`` describes the teacher for the run record: ``scene`` (absolute path), ``classes``,
    ``encoders``, ``builtin_encoders``, ``width``/``height`` (the teacher's resolution) and ``inputs``
    (what was read: caches, CLIP settings). ``stop_after`` returns after that many iterations (tests).
    Returns the summary also written to ``out/train_summary.json`` (plus the record's teacher fields).
    """
    if config.mode == "instant":
        return lift_run(stage1, out, config, data, inputs, resume, device)
    config.check()
    out, device = Path(out), torch.device(device)
    with folder_lock(out, "ovs3d segment"):
        check_fresh(out, resume)
        base, stage1_record = load_run(stage1, device, stage="reconstruct")
        model = SemanticField(base, SemanticConfig(mode=config.mode, feature_dim=int(data.text.shape[1])),
                              torch.Generator().manual_seed(config.seed), n_classes=int(data.text.shape[0]))
        model.class_text.copy_(data.text)
        record = stage2_record(stage1_record, inputs, to_plain(config), to_plain(model.config), Path(stage1))
        trainer = SegmentTrainer(model, data, config, out, device, record, stage1_step=stage1_record.step)
        warm = None
        if not (resume and trainer.load()) and config.init == "instant":
            lifted, lift_stats = lift(base, data, config.lift, stage1_record.step, device)
            warm = {"lift": lift_stats, "distill": distill_lifted(model, lifted, config)}
            del lifted
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, config)
        stats = train_loop(trainer, out, "segment", config.checkpoint_every, config.log_every, progress, stop_after,
                           postfix=lambda logs: {"feat": f"{logs['feature_loss']:.3f}"})
        return {"iteration": trainer.iteration, "warm_start": warm, "iterations_run": stats.iterations_run,
                "s_per_iter": stats.s_per_iter, "complete": stats.complete, "last": stats.last, "device": str(device), "classes": record.classes,
                "encoders": record.encoders, "builtin_encoders": record.builtin_encoders}
