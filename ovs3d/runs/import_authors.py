"""``ovs3d import-checkpoint``: an authors' 3D-OVS ``.th`` checkpoint as an ordinary ovs3d run folder.

The checkpoint is read as data only (``io/torch_checkpoint.py``) and converted (``runs/authors.py``: the
names, the x mirror of their recentring, the alpha mask, the marching step). The run folder then holds
what ``ovs3d reconstruct`` / ``ovs3d segment`` write (``checkpoint.safetensors`` + ``checkpoint.json``,
``config.yml``), so ``render``, ``test``, ``query``, ``segment --run`` (stage 2 of ours on their stage 1)
and every other reader use it unchanged:

* a stage-1 checkpoint (``train.py``) becomes a ``reconstruct`` run;
* a stage-2 checkpoint (``train_seg.py``, which also holds the field it was trained on, with its jointly
  tuned appearance) becomes a ``segment`` run in faithful mode. The checkpoint stores no text embeddings
  (the authors embed the prompts at run time), so the class prompts (default: the scene's
  ``segmentations/classes.txt``, in its order) are embedded with the chosen CLIP-slot encoder
  (``--extract.clip.*``), which must be the one the checkpoint was trained with.

The scene must be the one the checkpoint was trained on: the authors' field lives in the NDC space of
its cameras, which our loader rebuilds from the same ``poses_bounds.npy``. ``downsample`` is the
resolution the authors trained at relative to the pose file's (their ``ray_downsample_train``: 2 in
their stage-1 config, 8 in their stage-2 configs; the defaults).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from ovs3d.config import to_plain
from ovs3d.features import cache
from ovs3d.features.encoders import ClipConfig
from ovs3d.features.extract import ExtractConfig, clip_source, scene_images
from ovs3d.features.registry import build_image_text_encoder
from ovs3d.features.relevancy import text_embeddings
from ovs3d.io.lock import folder_lock
from ovs3d.io.torch_checkpoint import read_torch_checkpoint
from ovs3d.runs.authors import authors_field, authors_samples, authors_semantic, authors_step, check_checkpoint, \
    check_space
from ovs3d.runs.load import field_sections, occupancy_info
from ovs3d.runs.record import RunRecord
from ovs3d.runs.store import check_fresh, write_config, write_run
from ovs3d.scene.annotations import read_classes
from ovs3d.scene.load import load_scene
from ovs3d.scene.rayspace import choose_space

DEFAULT_DOWNSAMPLE = {"reconstruct": 2.0, "segment": 8.0}
MIRROR_NOTE = ("x mirrored: the authors' recentring is a reflection (x = z cross y), ours a proper rotation; "
               "box x range, x-width planes, the x line, the occupancy mask and the view-direction x input flipped")


@dataclass
class ImportSettings:
    """What an import was asked to do (the run folder's ``config.yml``)."""

    checkpoint: Path
    """The authors' .th file."""
    scene: Path
    """The scene folder it was trained on."""
    downsample: float | None = None
    """Training resolution = the pose file's size divided by this (None: 2 for stage 1, 8 for stage 2)."""
    classes: list[str] = field(default_factory=list)
    """Class prompts of a stage-2 checkpoint (empty: the scene's classes.txt)."""
    clip: ClipConfig = field(default_factory=ClipConfig)
    """The CLIP-slot encoder that embeds the class prompts (stage 2)."""


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def scene_clip_cache(scene_root: Path, clip: ClipConfig) -> str | None:
    """The scene's complete CLIP cache for ``clip`` at the default extraction settings, if there is one
    (``ovs3d test`` scores the 2D teacher from it); nothing is extracted."""
    folder, source = clip_source(scene_root, ExtractConfig(clip=clip), scene_images(scene_root))
    return str(folder.resolve()) if cache.is_complete(folder, source) else None


def import_checkpoint(settings: ImportSettings, out: str | Path, device: torch.device | str = "cpu",
                      log: Callable[[str], None] = print) -> RunRecord:
    """Convert ``settings.checkpoint`` into the run folder ``out`` (which must not hold a run); returns its record."""
    out, path = Path(out), Path(settings.checkpoint).resolve()
    settings = replace(settings, checkpoint=path, scene=Path(settings.scene).resolve())
    ckpt = read_torch_checkpoint(path)
    stage = check_checkpoint(ckpt, path)
    scene_root = settings.scene
    downsample = settings.downsample or DEFAULT_DOWNSAMPLE[stage]
    settings = replace(settings, downsample=downsample)
    scene = load_scene(scene_root, downsample=downsample, load_annotations=False)
    space, _ = choose_space(scene, "auto")
    check_space(ckpt["kwargs"], space, path)
    kwargs = to_plain({k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in ckpt["kwargs"].items()})
    field_ = authors_field(ckpt, space, path)
    step = authors_step(ckpt["kwargs"], scene.cameras, space)
    n_samples = authors_samples(ckpt["kwargs"])
    source = {"authors_checkpoint": str(path.resolve()), "md5": file_md5(path), "authors_kwargs": kwargs,
              "conversion": MIRROR_NOTE, "authors_test_samples": n_samples,
              "iterations": "unknown (the authors' checkpoint does not record them)"}
    common = dict(scene=str(scene_root), space=space.to_dict(), step=step, width=scene.width, height=scene.height,
                  iteration=0, complete=True, config=to_plain(settings), arch=field_.arch(),
                  occupancy=occupancy_info(field_))
    sections = field_sections(field_)
    if stage == "reconstruct":
        record = RunRecord(stage="reconstruct", **common, inputs=source,
                           state={"reset_iteration": 0, "n_samples": n_samples, "elapsed_s": 0.0, "imported": True,
                                  "mask_reso": list(field_.occupancy.node_reso) if field_.occupancy else None})
    else:
        classes = list(settings.classes) or read_classes(scene_root / "segmentations" / "classes.txt")
        encoder = build_image_text_encoder(settings.clip, torch.device(device))
        text = text_embeddings(encoder, classes).cpu()
        model = authors_semantic(ckpt, field_, text, path)
        kept = int(text.shape[1])
        width = int(ckpt["state_dict"]["feature_render_module.mlp.2.weight"].shape[0])
        if kept < width:
            log(f"import: the {encoder.name} embeddings have {kept} dimensions: the head's first {kept} of {width} "
                f"outputs are kept (the authors' run saw them zero-padded to {width}; cosine labels are unchanged)")
        builtin = settings.clip.kind == "builtin"
        inputs = {**source, "clip_config": to_plain(settings.clip), "clip_cache": scene_clip_cache(scene_root, settings.clip),
                  "clip_resolution": [scene.width, scene.height], "feature_dims": {"checkpoint": width, "kept": kept}}
        record = RunRecord(stage="segment", **common, semantic=to_plain(model.config), classes=classes,
                           encoders={"clip": encoder.name, "dino": "unknown (authors' checkpoint)"},
                           builtin_encoders=builtin, inputs=inputs,
                           state={"joint": True, "elapsed_s": 0.0, "train_step": step, "imported": True})
        sections["semantic"] = {k: v for k, v in model.state_dict().items() if not k.startswith("field.")}
    with folder_lock(out, "ovs3d import-checkpoint", log=log):
        check_fresh(out, resume=False)
        out.mkdir(parents=True, exist_ok=True)
        write_config(out, settings)
        write_run(out, record, sections)
    log(f"import: {path.name} -> {stage} run {out} ({MIRROR_NOTE.split(':')[0]}; {n_samples} samples per ray as "
        f"the authors' test, step {step:.5f})")
    return record

